"""The stages' default configs (big_vision style `get_config(arg)`), importable from the installed package.

`configs/*.py` at the top of the checkout are thin command-line handles onto these modules.
"""
