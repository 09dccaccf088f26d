"""The run store: run directories named by the hash of their spec, and what is read from and written to them."""
