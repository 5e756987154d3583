"""Read files the way the Actions runner reads them: ``GITHUB_OUTPUT`` and workflow commands.

The output parser follows the runner's file-command reader: lines split on LF, ``name=value`` when '='
comes before '<<', else ``name<<DELIMITER`` with the value running to the first line equal to the
delimiter. A value that never closes is an error, as it is for the runner.
"""

from __future__ import annotations

import re


def parse_outputs(text: str) -> dict[str, str]:
    outputs: dict[str, str] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line:
            continue
        equals, heredoc = line.find("="), line.find("<<")
        if equals >= 0 and (heredoc < 0 or equals < heredoc):
            name, value = line.split("=", 1)
            outputs[name] = value
            continue
        if heredoc < 0:
            raise ValueError(f"invalid line {line!r}")
        name, delimiter = line.split("<<", 1)
        if not name or not delimiter:
            raise ValueError(f"invalid heredoc line {line!r}")
        body: list[str] = []
        while True:
            if index >= len(lines):
                raise ValueError(f"matching delimiter not found {delimiter!r}")
            current = lines[index]
            index += 1
            if current == delimiter:
                break
            body.append(current)
        outputs[name] = "\n".join(body)
    return outputs


_COMMAND = re.compile(r"^::(?P<name>[a-z-]+)(?: (?P<props>[^:]*))?::(?P<message>.*)$")


def commands(log: str, name: str) -> list[str]:
    """Messages of every ``::name::`` workflow command in a log, unescaped."""
    found = []
    for line in log.splitlines():
        match = _COMMAND.match(line)
        if match and match["name"] == name:
            found.append(match["message"].replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%"))
    return found
