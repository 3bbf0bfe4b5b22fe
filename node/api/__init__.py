"""The node's HTTP surface: thin routes (`routes`), the serving class of the OpenAI API (`completions`), the
peer API (`peer`) and what every route does with HTTP (`io`). Composed by `wwwserve.node.app.create_app`."""
