"""Development tools of invoice-sync: the accounting-tool simulators and demo seeder, bench and chaos.

Installed by ``make run``, ``make ui`` and ``make test``; never by the deployment image. This package
may import the runtime package ``invoice_sync``; the runtime package never imports this one (a test
proves it by importing every runtime module without it).
"""
