"""The alliance chain's "2+23+X+M" topology, as names a configuration may use.

Two supervision main chains, 23 regional sub-chains (Hong Kong, Macao and Guangdong's 21
prefecture-level cities), X business-scenario chains and a judicial chain reached cross-chain. The
regional names double as the ``{region}`` level of the MQTT topic tree, so they are fixed here and a
typo fails at start-up instead of creating a region nobody subscribes to.
"""

from __future__ import annotations

SUPERVISION_CHAINS = ("health", "sports")

GUANGDONG_CITIES = (
    "guangzhou",
    "shenzhen",
    "zhuhai",
    "shantou",
    "foshan",
    "shaoguan",
    "heyuan",
    "meizhou",
    "huizhou",
    "shanwei",
    "dongguan",
    "zhongshan",
    "jiangmen",
    "yangjiang",
    "zhanjiang",
    "maoming",
    "zhaoqing",
    "qingyuan",
    "chaozhou",
    "jieyang",
    "yunfu",
)
REGIONS = ("hongkong", "macao", *GUANGDONG_CITIES)

SCENARIO_CHAINS = ("sports_medical_consumption", "enterprise_public_services", "national_fitness_services")
JUDICIAL_CHAIN = "judicial"

assert len(GUANGDONG_CITIES) == 21 and len(REGIONS) == 23


def is_region(name: str) -> bool:
    return name in REGIONS


# Names an anchor target may take: the chain it anchors on, in the topology above.
TARGETS = (*(f"{c}_supervision" for c in SUPERVISION_CHAINS), *REGIONS, *SCENARIO_CHAINS, JUDICIAL_CHAIN)


def is_target(name: str) -> bool:
    return name in TARGETS
