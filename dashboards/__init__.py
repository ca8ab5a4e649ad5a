"""The live dashboard (a Django app: a page and its static JS over ``/api/v1/stream``) and, in
``grafana/``, the Grafana dashboard and Prometheus alert rules as files."""
