"""azureml-events-worker: turns Azure Machine Learning events, read from Event Hubs, into actions.

The modules and how an event moves through them: docs/architecture.md.
"""
