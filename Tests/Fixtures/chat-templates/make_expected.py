#!/usr/bin/env python3
"""Regenerate expected.json: renders of the real chat templates in this folder,
produced the way transformers.apply_chat_template does (jinja2 sandbox,
trim_blocks, lstrip_blocks, loopcontrols, raise_exception, strftime_now, tojson
with ensure_ascii=False). Run from anywhere: python3 make_expected.py"""
import json, os
from datetime import datetime
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
import jinja2.ext

HERE = os.path.dirname(os.path.abspath(__file__))

class TemplateError(Exception):
    pass

def raise_exception(message):
    raise TemplateError(message)

def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

def strftime_now(fmt):
    return datetime.now().strftime(fmt)

env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now

SYS_MULTI = [
    {"role": "system", "content": "You are a helpful assistant.  "},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": " It is 4. "},
    {"role": "user", "content": "And 3+3?"},
]
NO_SYSTEM = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell me a joke."},
]
SINGLE = [{"role": "user", "content": "Hello!"}]
NON_ASCII = [
    {"role": "system", "content": "Réponds en français, s'il te plaît."},
    {"role": "user", "content": "Qu'est-ce que «ça» veut dire? 日本語 🌍\n\tTabs & \"quotes\""},
    {"role": "assistant", "content": "Ça veut dire \"that\" — 👍"},
    {"role": "user", "content": "Merci ! 谢谢"},
]
DOUBLE_USER = [
    {"role": "user", "content": "one"},
    {"role": "user", "content": "two"},
]
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather — in °C",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "City, e.g. Zürich"},
                           "days": {"type": "integer"}},
            "required": ["location"],
        },
    },
}]
TOOL_CALL_CONV = [
    {"role": "user", "content": "Weather in Zürich?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "abc123def", "type": "function", "function": {"name": "get_weather", "arguments": {"location": "Zürich", "days": 2}}}]},
    {"role": "tool", "tool_call_id": "abc123def", "content": "{\"temp\": 21}"},
]

BOS = {"llama-3.1-instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
       "qwen2.5-instruct.jinja": (None, "<|im_end|>"),
       "mistral-v0.1-instruct.jinja": ("<s>", "</s>"),
       "mistral-7b-instruct-v0.3.jinja": ("<s>", "</s>")}

CASES = []
for tpl in BOS:
    for name, msgs in [("system_multi_turn", SYS_MULTI), ("no_system", NO_SYSTEM), ("single_user", SINGLE), ("non_ascii", NON_ASCII), ("double_user", DOUBLE_USER)]:
        for agp in (True, False):
            CASES.append((tpl, f"{name}_agp{int(agp)}", {"messages": msgs, "add_generation_prompt": agp}))
CASES.append(("llama-3.1-instruct.jinja", "tools_in_user_message", {"messages": NO_SYSTEM, "add_generation_prompt": True, "tools": TOOLS}))
CASES.append(("llama-3.1-instruct.jinja", "tools_in_system", {"messages": SYS_MULTI, "add_generation_prompt": True, "tools": TOOLS, "tools_in_user_message": False, "date_string": "01 Jan 2025"}))
CASES.append(("llama-3.1-instruct.jinja", "tool_call_turn", {"messages": TOOL_CALL_CONV, "add_generation_prompt": True}))
CASES.append(("llama-3.1-instruct.jinja", "builtin_tools", {"messages": SINGLE, "add_generation_prompt": True, "builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}))
CASES.append(("qwen2.5-instruct.jinja", "tools", {"messages": SYS_MULTI, "add_generation_prompt": True, "tools": TOOLS}))
CASES.append(("qwen2.5-instruct.jinja", "tool_call_turn", {"messages": TOOL_CALL_CONV, "add_generation_prompt": True, "tools": TOOLS}))
CASES.append(("mistral-7b-instruct-v0.3.jinja", "tools", {"messages": NO_SYSTEM, "add_generation_prompt": True, "tools": TOOLS}))
CASES.append(("mistral-7b-instruct-v0.3.jinja", "tool_call_turn", {"messages": TOOL_CALL_CONV, "add_generation_prompt": True, "tools": TOOLS}))
CASES.append(("mistral-v0.1-instruct.jinja", "bad_role", {"messages": [{"role": "tool", "content": "x"}], "add_generation_prompt": False}))

out = []
for tpl, name, ctx in CASES:
    bos, eos = BOS[tpl]
    ctx = dict(ctx)
    if bos is not None:
        ctx["bos_token"] = bos
    ctx["eos_token"] = eos
    template = env.from_string(open(os.path.join(HERE, tpl), encoding="utf-8").read())
    entry = {"template": tpl, "name": name, "context": ctx}
    try:
        entry["expected"] = template.render(**ctx)
    except TemplateError as e:
        entry["error"] = str(e)
    out.append(entry)

with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
    json.dump({"generator": "make_expected.py", "jinja2": jinja2.__version__, "cases": out}, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(len(out), "cases;", sum(1 for e in out if "error" in e), "errors")
