"""dermaops.components: one Kubeflow Pipelines v2 component per stage.

Each stage module holds a plain function typed with KFP artifacts whose body imports the core
and calls it; :func:`dermaops.components.build.build` turns them into components that run in
the project image. The functions stay callable as they are, which is how the unit tests drive
them with artifacts under tmp_path. This package imports nothing on purpose: a component's
process imports :mod:`dermaops.components.runtime` while kfp itself is still loading.
"""
