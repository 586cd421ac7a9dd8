"""Thin KFP components, one per pipeline step.

Each body adapts artifacts to paths, calls one function in refinery.orchestration.steps, and records
outputs and metrics. Imports live inside the bodies: a component file's module-level imports do not
exist when KFP runs the body.
"""
