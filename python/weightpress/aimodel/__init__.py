"""Core AI models (.aimodel): reading, emitting compressed weights, running on Apple's runtime.

    weightpress.aimodel.program   load / constants / read / replace / save / run
    weightpress.aimodel.emit      Emitter: palettize / quantize / prune -> Core AI ops
    weightpress.aimodel.select    which constants are weights, their channel axes (coreai-opt's rules)
    weightpress.aimodel.compress  compress_aimodel: one method over a program (compress_model
                                  dispatches .aimodel inputs here)

The sibling of weightpress.mlpackage for Core AI's container. Needs coreai-core (and
coreai-torch to convert torch models).
"""
