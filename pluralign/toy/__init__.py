"""The embedded default: a procedural 32x32 world, its tiny base and aesthetically aligned models,
and a content checker. See docs/toy.md."""
