"""The AI server (`serve ai`): tenants (bot profiles), their knowledge and their tools.

`create_app(settings)` in `app.py` is the ASGI factory; `commands.load_tenants_command` is what
`switchboard tenants load FILE` runs.
"""
