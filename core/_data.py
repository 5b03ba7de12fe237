"""Placeholder: replaced by the data module."""


class Dataset: ...


def make_dataset(*a, **k):
    raise NotImplementedError
