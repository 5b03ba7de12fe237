"""Placeholder: replaced by the analytic NTK module."""


class NTKReference: ...


def analytic_ntk(*a, **k):
    raise NotImplementedError


def bound(*a, **k):
    raise NotImplementedError


def lambda0(*a, **k):
    raise NotImplementedError


def lambda_max(*a, **k):
    raise NotImplementedError


def ntk_reference(*a, **k):
    raise NotImplementedError


def stability_limits(*a, **k):
    raise NotImplementedError
