"""Demo parts shipped with edgefleet: not part of the platform.

:mod:`edgefleet.demo.origin` is a programmable HTTP origin (``edgefleet origin``)
that ``edgefleet up`` puts behind its demo domain and that the tests and
benchmarks use as a real origin process. Nothing in the platform imports this
package; operators put their own origins behind a Domain.
"""
