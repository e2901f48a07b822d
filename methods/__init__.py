"""ltbench's built-in methods, one file each (shipped as ``ltbench.methods``).

A new method is one more file like these: in this folder, in a folder passed with ``--plugins`` /
``$LTBENCH_PLUGINS``, or in a package exposing the ``ltbench.methods`` entry-point group.
"""
