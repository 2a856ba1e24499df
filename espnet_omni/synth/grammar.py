"""A text grammar for the generated corpus: numbers, times, dates, commands, short sentences.

Every sentence is lower-case words without punctuation, over a closed vocabulary of a few
hundred words (``vocabulary()``), so that a small CPU model can learn it while the sentences
themselves are numerous enough that test sentences are unseen in training.
"""

import random
from typing import Callable, Dict, List, Set

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
ORDINAL_ONES = ["", "first", "second", "third", "fourth", "fifth", "sixth", "seventh",
                "eighth", "ninth"]
ORDINAL_TEENS = ["tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth",
                 "sixteenth", "seventeenth", "eighteenth", "nineteenth"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]
ROOMS = ["kitchen", "bedroom", "living room", "bathroom", "office", "garage", "garden",
         "hallway", "basement", "dining room"]
DEVICES = ["lights", "heater", "fan", "radio", "television", "oven", "speaker", "lamp",
           "air conditioner", "coffee machine", "washing machine", "alarm"]
NAMES = ["anna", "peter", "maria", "david", "sarah", "james", "linda", "robert", "emma",
         "oliver", "sophie", "thomas", "lucy", "daniel", "grace", "henry", "julia", "simon"]
CITIES = ["london", "paris", "berlin", "madrid", "tokyo", "boston", "chicago", "dublin",
          "sydney", "toronto", "rome", "vienna", "seattle", "denver", "oslo", "lisbon"]
GENRES = ["jazz", "rock", "classical", "pop", "folk", "country", "blues", "piano", "dance"]
TASKS = ["buy milk", "water the plants", "call the doctor", "pay the bills",
         "pick up the kids", "feed the cat", "walk the dog", "clean the car",
         "book a table", "send the letter", "check the mail", "take the medicine",
         "return the books", "fix the bike", "pack the bags", "bake a cake"]
ADJECTIVES = ["red", "blue", "green", "yellow", "black", "white", "old", "new", "small",
              "big", "quiet", "busy", "happy", "tired", "bright", "dark", "warm", "cold",
              "little", "young", "heavy", "empty", "clean", "friendly"]
NOUNS = ["dog", "cat", "car", "bus", "train", "boy", "girl", "man", "woman", "teacher",
         "doctor", "farmer", "bird", "horse", "child", "student", "driver", "neighbor",
         "baker", "painter", "house", "boat", "tree", "river"]
PLACES = ["window", "station", "market", "park", "bridge", "school", "church", "river",
          "door", "table", "road", "village", "library", "hospital", "beach", "hill",
          "corner", "gate", "shop", "field"]
VERBS_ING = ["sleeping", "waiting", "standing", "sitting", "running", "walking", "working",
             "reading", "singing", "playing", "resting", "talking", "eating", "hiding"]
VERBS_PAST = ["saw", "found", "met", "followed", "helped", "called", "painted", "watched",
              "visited", "passed", "cleaned", "carried"]
PREPOSITIONS = ["near", "behind", "under", "beside", "outside", "inside", "across", "by"]
UNITS = ["minutes", "hours", "seconds", "days", "weeks"]
OBJECTS = ["apples", "books", "letters", "chairs", "tickets", "eggs", "boxes", "cups",
           "pens", "flowers", "coins", "keys"]


def say_number(n: int) -> str:
    """0 <= n <= 9999 in words ("three hundred and twelve", "two thousand and five")."""
    if not 0 <= n <= 9999:
        raise ValueError(f"number out of range: {n}")
    if n < 10:
        return ONES[n]
    if n < 20:
        return TEENS[n - 10]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        rest = n % 100
        head = ONES[n // 100] + " hundred"
        return head if rest == 0 else f"{head} and {say_number(rest)}"
    rest = n % 1000
    head = ONES[n // 1000] + " thousand"
    if rest == 0:
        return head
    return f"{head} and {say_number(rest)}" if rest < 100 else f"{head} {say_number(rest)}"


def say_ordinal(n: int) -> str:
    """1 <= n <= 31 as an ordinal ("twenty first")."""
    if n < 10:
        return ORDINAL_ONES[n]
    if n < 20:
        return ORDINAL_TEENS[n - 10]
    if n % 10 == 0:
        return TENS[n // 10][:-1] + "ieth"
    return f"{TENS[n // 10]} {ORDINAL_ONES[n % 10]}"


def say_time(rng: random.Random) -> str:
    hour = rng.randint(1, 12)
    minute = rng.choice([0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, rng.randint(1, 59)])
    style = rng.randrange(4)
    if style == 0 and minute in (15, 30, 45):
        words = {15: "quarter past", 30: "half past", 45: "quarter to"}[minute]
        return f"{words} {say_number(hour if minute != 45 else hour % 12 + 1)}"
    if minute == 0:
        return f"{say_number(hour)} {rng.choice(['in the morning', 'in the evening', 'sharp'])}"
    spoken_minute = f"oh {ONES[minute]}" if minute < 10 else say_number(minute)
    return f"{say_number(hour)} {spoken_minute}" + rng.choice(["", " in the morning", " at night"])


def say_date(rng: random.Random) -> str:
    day, month = rng.randint(1, 28), rng.choice(MONTHS)
    style = rng.randrange(3)
    if style == 0:
        return f"{rng.choice(DAYS)} the {say_ordinal(day)} of {month}"
    if style == 1:
        return f"the {say_ordinal(day)} of {month}"
    return f"{month} {say_ordinal(day)} {say_number(rng.choice([1990, 2005, 2019, 2024, 2031]) % 10000)}"


def _command(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return f"turn {rng.choice(['on', 'off'])} the {rng.choice(ROOMS)} {rng.choice(DEVICES)}"
    if kind == 1:
        return f"set an alarm for {say_time(rng)}"
    if kind == 2:
        return f"set a timer for {say_number(rng.randint(1, 90))} {rng.choice(UNITS)}"
    if kind == 3:
        return f"play some {rng.choice(GENRES)} music in the {rng.choice(ROOMS)}"
    if kind == 4:
        return f"call {rng.choice(NAMES)} at {say_time(rng)}"
    if kind == 5:
        return f"remind me to {rng.choice(TASKS)} on {rng.choice(DAYS)}"
    if kind == 6:
        return f"what is the weather in {rng.choice(CITIES)} on {rng.choice(DAYS)}"
    return f"send a message to {rng.choice(NAMES)} and say i will be late"


def _sentence(rng: random.Random) -> str:
    kind = rng.randrange(5)
    a, b = rng.choice(ADJECTIVES), rng.choice(NOUNS)
    if kind == 0:
        return f"the {a} {b} is {rng.choice(VERBS_ING)} {rng.choice(PREPOSITIONS)} the {rng.choice(PLACES)}"
    if kind == 1:
        return f"{rng.choice(NAMES)} {rng.choice(VERBS_PAST)} the {a} {b} {rng.choice(PREPOSITIONS)} the {rng.choice(PLACES)}"
    if kind == 2:
        return f"we have {say_number(rng.randint(2, 99))} {rng.choice(OBJECTS)} for the {b}"
    if kind == 3:
        return f"my {b} lives in {rng.choice(CITIES)} near the {a} {rng.choice(PLACES)}"
    return f"the train to {rng.choice(CITIES)} leaves at {say_time(rng)} on {rng.choice(DAYS)}"


def _number(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return f"the number is {say_number(rng.randint(0, 9999))}"
    if kind == 1:
        return " ".join(ONES[rng.randrange(10)] for _ in range(rng.randint(3, 7)))
    return f"it costs {say_number(rng.randint(1, 999))} dollars"


def _time_or_date(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return f"the meeting is at {say_time(rng)}"
    if kind == 1:
        return f"my birthday is on {say_date(rng)}"
    return f"see you on {say_date(rng)} at {say_time(rng)}"


GENERATORS: Dict[str, Callable[[random.Random], str]] = {
    "command": _command,
    "sentence": _sentence,
    "number": _number,
    "time": _time_or_date,
}


def generate(rng: random.Random) -> str:
    """One sentence; the category is drawn first, then its template."""
    return GENERATORS[rng.choice(sorted(GENERATORS))](rng)


def vocabulary() -> Set[str]:
    """Every word the grammar can produce."""
    words: Set[str] = set()
    rng = random.Random(0)
    for _ in range(200000):
        words.update(generate(rng).split())
    for n in range(10000):
        words.update(say_number(n).split())
    for n in range(1, 32):
        words.update(say_ordinal(n).split())
    return words


def is_held_out(sentence: str, percent: int = 10) -> bool:
    """True for the ``percent``% of all sentences reserved for test sets (stable hash)."""
    import zlib

    return zlib.crc32(sentence.encode()) % 100 < percent


def sentences(rng: random.Random, count: int, held_out: bool) -> List[str]:
    """``count`` sentences, all from the held-out part (tests) or all from the rest."""
    out = []
    while len(out) < count:
        s = generate(rng)
        if is_held_out(s) == held_out:
            out.append(s)
    return out
