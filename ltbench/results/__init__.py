"""Readers of run folders: tables (runs.py into a frame, layout.py, compare.py with significance.py,
render.py; tables.py ties them together) and plots. They read files in the format of ltbench.record and
never import the engine (ltbench.engine.store writes those files) or torch."""
