"""Authorization policy: who may do what to which tool, resource or prompt, decided by Cedar.

``schema`` (the shipped Cedar schema: entities, actions, context), ``entities`` (MCP facts -> Cedar
requests), ``engine`` (a validated policy set and its decisions, cached), ``store`` (policy files, hot
reload), ``catalog`` (what each upstream's tools declare, their scopes), ``cases`` (policy test tables),
``ratelimit`` (token buckets). Pure cores except ``store`` (files) and ``ratelimit``'s Redis buckets.
"""
