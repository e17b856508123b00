"""Benchmarks run by `lidarseg bench NAME`: each compares our code with a plain reference in one process."""
