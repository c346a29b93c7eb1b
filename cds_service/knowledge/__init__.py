"""Everything that reads or writes `knowledge/`: the loader and compiler, discovery, offline evaluation, explain, authoring and the product table."""
