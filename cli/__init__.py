"""The `pprl` command line: thin click shells over the linkage and stats libraries."""
