"""Core AI models (.aimodel): reading, emitting compressed weights, running on Apple's runtime.

    weightpress.aimodel.program   load / constants / read / replace / save / run
    weightpress.aimodel.emit      Emitter: palettize / quantize / prune -> Core AI ops

The sibling of weightpress.mlpackage for Core AI's container. Needs coreai-core (and
coreai-torch to convert torch models); `weightpress compress` does not take .aimodel inputs
yet (issue 19).
"""
