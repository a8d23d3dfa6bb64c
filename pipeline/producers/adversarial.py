"""What the simulator does to make the pipeline's life hard, and the truth to judge it by.

* Malformed messages, one :data:`MalformedKind` each, with the dead-letter reason the
  validate stage gives it (:data:`MALFORMED_REASONS`).
* Adversarial identities (:class:`Adversary`, off unless asked for): household and company
  switchboard phones shared by many people, shared devices, forwarded emails clicked by
  someone else, recycled phone numbers, placeholder ids, typo'd emails, late link events.
* :class:`TruthLedger`: who truly owns which identifier, the stage path of every customer,
  and the best achievable identity components (identifiers linked by valid events of their
  one true owner; values with several owners are misleading and left out), written by
  :class:`GroundTruthWriter` and read back by :func:`load_ground_truth`.
"""

from __future__ import annotations

from pipeline.producers.adversary import (
    ADVERSARIAL_TAGS as ADVERSARIAL_TAGS,
)
from pipeline.producers.adversary import (
    FORWARDED as FORWARDED,
)
from pipeline.producers.adversary import (
    HOUSEHOLD as HOUSEHOLD,
)
from pipeline.producers.adversary import (
    LATE_LINK as LATE_LINK,
)
from pipeline.producers.adversary import (
    LINK as LINK,
)
from pipeline.producers.adversary import (
    PLACEHOLDER as PLACEHOLDER,
)
from pipeline.producers.adversary import (
    PLACEHOLDER_VALUES as PLACEHOLDER_VALUES,
)
from pipeline.producers.adversary import (
    RECYCLED as RECYCLED,
)
from pipeline.producers.adversary import (
    SHARED_DEVICE as SHARED_DEVICE,
)
from pipeline.producers.adversary import (
    SWITCHBOARD as SWITCHBOARD,
)
from pipeline.producers.adversary import (
    TYPO as TYPO,
)
from pipeline.producers.adversary import (
    AdversarialMix as AdversarialMix,
)
from pipeline.producers.adversary import (
    Adversary as Adversary,
)
from pipeline.producers.adversary import (
    typo_of as typo_of,
)
from pipeline.producers.malformed import (
    MALFORMED_REASONS as MALFORMED_REASONS,
)
from pipeline.producers.malformed import (
    MALFORMED_WEIGHTS as MALFORMED_WEIGHTS,
)
from pipeline.producers.malformed import (
    OVERSIZED_BYTES as OVERSIZED_BYTES,
)
from pipeline.producers.malformed import (
    MalformedKind as MalformedKind,
)
from pipeline.producers.malformed import (
    corrupt as corrupt,
)
from pipeline.producers.truth_file import (
    TRUTH_VERSION as TRUTH_VERSION,
)
from pipeline.producers.truth_file import (
    CustomerRecord as CustomerRecord,
)
from pipeline.producers.truth_file import (
    GroundTruth as GroundTruth,
)
from pipeline.producers.truth_file import (
    GroundTruthWriter as GroundTruthWriter,
)
from pipeline.producers.truth_file import (
    MisleadingId as MisleadingId,
)
from pipeline.producers.truth_file import (
    load_ground_truth as load_ground_truth,
)
from pipeline.producers.truth_file import (
    pipeline_node as pipeline_node,
)
from pipeline.producers.truth_ledger import (
    CustomerTruth as CustomerTruth,
)
from pipeline.producers.truth_ledger import (
    TruthLedger as TruthLedger,
)
