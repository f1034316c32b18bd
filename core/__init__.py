"""rankwise numerical core: plain functions over arrays returning frozen result dataclasses.

No file I/O, no printing, no exits. Import the submodules directly (``rankwise.core.svd``);
this package imports nothing heavy so that the CLI stays fast to start.
"""
