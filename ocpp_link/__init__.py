"""OCPP link: the transparent relay between charge points and the CSMS, its fail-open tap, the
tolerant OCPP-J 1.6 / 2.0.1 decoder that turns frames into `models.events`, and a simulator.

Modules: `relay` (websockets server + upstream clients), `tap` (prefilter, bounded queue, counters),
`decoder` (frames -> domain events), `simulator` (charge point on the `ocpp` package).
This package never imports `enforcement` or `api`: it only produces domain events.
"""
