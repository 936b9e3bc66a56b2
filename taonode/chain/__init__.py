"""Chain adapter: artifacts, typed bindings, tx sender, event watcher, local chains."""
