"""Built-in runtimes, each a plugin of ``scanflow_execute_step``: in-process calls and local processes."""
