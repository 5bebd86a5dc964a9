"""Plotting helpers for the book.

Each helper draws on a matplotlib ``Axes`` it is given (``ax``) and returns
it, so chapters compose figures freely and keep plotting boilerplate out of
the text.
"""
