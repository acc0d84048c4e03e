"""Chat notifications, with a default message for every Azure ML event.

Microsoft Teams takes them through a Workflows webhook, as Adaptive Cards; Slack through an incoming
webhook, as Block Kit.

:mod:`~worker.actions.chat.notice` says what a notification says (a title, the facts that matter for
its event type, the workspace, the time, a link to Azure ML studio from :mod:`~worker.actions.chat.studio`;
a digest for a group, what did not happen for an expiry); :mod:`~worker.actions.chat.cards` lays it
out as an Adaptive Card and :mod:`~worker.actions.chat.blocks` as Block Kit, each within its
service's limits. :mod:`~worker.actions.chat.teams` and :mod:`~worker.actions.chat.slack` are the
action types. All of it is pure but the executors, which send through the shared HTTP client.

May use: the actions' base, templates, secrets and HTTP modules, and the records every room speaks.
"""
