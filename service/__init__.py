"""The check service: hidden-test feedback for readers of the online book (issue #17).

A reader's notebook asks for cases of one graded part (``POST /cases``),
runs its own functions on them locally, and sends the outputs back as data
(``POST /answers``); the service checks them with the same checks that grade
the class (:mod:`grader.checks`) and answers with the verdict and the
check's message, never the expected values or the check's code. The service
never runs anything a reader sends: answers are JSON read by
:mod:`bnref.checking.codec`.

Part of the private instructor repository (it holds the checks); never
exported by ``make public``. Run it with ``make serve``.
"""
