"""The Azure ML actions: batch endpoints, jobs and online deployments, through Azure Resource Manager.

:mod:`~worker.actions.azureml.batch` (``azureml_batch_endpoint``), :mod:`~worker.actions.azureml.job`
(``azureml_job``) and :mod:`~worker.actions.azureml.deploy` (``azureml_deploy``) stand on
:mod:`~worker.actions.azureml.arm` (requests with the worker's Entra ID token, the service's errors,
long-running operations), :mod:`~worker.actions.azureml.workspace` (workspaces, assets and names by
ARM id) and :mod:`~worker.actions.azureml.inputs` (a job's inputs and outputs);
:mod:`~worker.actions.azureml.pipeline` is SDK v1's published pipelines (``azureml_pipeline``).

May use: what the rest of :mod:`worker.actions` may; the network only through the shared clients.
"""
