"""Torch-free skeleton core shared by training, export and the service.

Joint layouts, layout conversion, window resampling and normalisation live here so
that the exact same code prepares a model's input at training time and at serving time.
"""
