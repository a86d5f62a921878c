# One module per filter, named as in the compiled form; see shared/filters.py.
