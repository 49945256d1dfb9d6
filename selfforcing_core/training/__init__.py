"""Training the project's own models on a procedural, captioned video world.

`world` generates the clips (shapes, colours, motions, backgrounds, camera pans, each with a
caption and its parameters); `evaluator` scores any model's videos against those parameters.
"""
