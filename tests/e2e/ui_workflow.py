"""A UI-format workflow (what the editor saves: example_workflows/*.json) as the API-format prompt that
POST /prompt takes, the way the frontend converts plain nodes: links become [node id, output slot],
saved widget values go to the node's widget inputs in /object_info order."""
from __future__ import annotations

from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def widget_names(spec: dict[str, Any]) -> list[str | None]:
    """A node's widgets in the order the editor saves their values; None marks the extra value a
    `control_after_generate` widget (a seed's 'randomize') saves after its own."""
    names: list[str | None] = []
    for group in ("required", "optional"):
        declared = spec["input"].get(group, {})
        for name in spec.get("input_order", {}).get(group, list(declared)):
            kind, options = declared[name][0], (declared[name][1:] or [{}])[0]
            if (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput"):
                names.append(name)
                if options.get("control_after_generate"):
                    names.append(None)
    return names


def api_prompt(workflow: dict[str, Any], object_info: dict[str, Any],
               values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The API prompt of `workflow`; `values` replaces saved widget values by input name, in every node."""
    values = values or {}
    sources = {link[0]: [str(link[1]), link[2]] for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        names = widget_names(object_info[node["type"]])
        saved = node.get("widgets_values", [])
        if len(saved) != len(names):
            raise ValueError(f"node {node['id']} ({node['type']}) saves {len(saved)} widget values "
                             f"for {len(names)} widgets")
        inputs = {name: values.get(name, value) for name, value in zip(names, saved) if name is not None}
        inputs.update({slot["name"]: sources[slot["link"]] for slot in node.get("inputs", [])
                       if slot.get("link") is not None})
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
