"""The aesthetic dial: one intent adapter per category on one base, each turned up or down at will.

``session`` holds the model side (a pipeline, its adapters, a render at a dial setting and the
diffusers snippet that reproduces it); ``app`` puts a Gradio page over it (``pluralign dial``).
"""
