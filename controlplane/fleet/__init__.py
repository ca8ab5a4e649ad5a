"""Fleet: the config snapshot the workers enforce (compile, version, publish) and the workers
themselves as their heartbeats report them."""
