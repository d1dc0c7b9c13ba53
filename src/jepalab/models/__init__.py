"""Encoders, predictors and world models."""
