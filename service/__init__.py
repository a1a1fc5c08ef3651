"""The running service's orchestration: the context every part shares, the parts themselves (camera
supervisor, enforcement shards, OCPP relay, scheduler, notification outbox), leadership in a fleet and
the settings operators edit at run time. Imports models, anpr, ocpp_link and enforcement; never api
(HTTP only: routes, templates, dependencies), which builds on this package."""
