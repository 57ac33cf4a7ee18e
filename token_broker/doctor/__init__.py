"""python -m token_broker doctor: the command line and its checks."""
