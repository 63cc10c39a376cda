"""Graphs: node-level adapters for four kinds of files and GRACE's two-view pair builder."""
