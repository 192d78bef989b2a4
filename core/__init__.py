"""The bottom layer: settings, the error tree and the enums every other layer shares.

It imports nothing of ours, so anything may import it (the import-rule test holds this).
"""
