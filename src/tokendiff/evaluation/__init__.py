"""Likelihood bounds with error bars and sample metrics."""

from tokendiff.evaluation.likelihood import LikelihoodResult, evaluate_likelihood

__all__ = ["LikelihoodResult", "evaluate_likelihood"]
