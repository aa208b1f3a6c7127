"""Distillation: smaller students trained on unlabelled inputs to reproduce their teacher.

`data` reads what a student learns from, `corpus` builds the offline text corpus,
`students` makes students per model family and holds their losses, `trainer`
runs the time-bounded, checkpointed, cached training. The pass that puts a
student into a build is `optimise.passes.distil`.
"""
