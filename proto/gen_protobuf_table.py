#!/usr/bin/env python3
"""Generates src/server/apiserver/protobuf_table.rs: protobuf field numbers of the
Kubernetes API types, with their JSON names, for decoding protobuf request bodies.

Usage: gen_protobuf_table.py <k8s-pb crate src dir> <openapi v2 json from skiff> > out.rs

Field numbers and wire types come from the prost-annotated bindings of the upstream .proto
files (the k8s-pb crate's sources); JSON names come from skiff's own OpenAPI definitions, so
the decoded JSON uses exactly the names the JSON API uses.
"""
import json, os, re, sys

src, openapi = sys.argv[1], sys.argv[2]
defs = json.load(open(openapi))["definitions"]

# A field's type may span several lines (rustfmt breaks long map types), so it runs up to the
# `,` that ends a line and is followed by the next field's doc comment or attribute, or the end.
FIELD = re.compile(r'#\[prost\(([^)]*)\)\]\s*pub (r#)?([a-z0-9_]+):\s*(.*?),\n(?=\s*(?:///|#\[|$))', re.S)
STRUCT = re.compile(r'pub struct (\w+) \{(.*?)\n\}', re.S)

def def_name(mod):
    parts = mod.split("/")
    if parts[0] == "api":
        return "io.k8s.api." + ".".join(parts[1:])
    if parts[0] == "apimachinery":
        return "io.k8s.apimachinery." + ".".join(parts[1:])
    return None

messages = {}  # full name -> list of fields
inline_targets = {}  # (message, field) -> full name of the field's message type
for root, _, files in os.walk(src):
    for f in files:
        if f != "mod.rs":
            continue
        mod = os.path.relpath(root, src)
        prefix = def_name(mod)
        if prefix is None:
            continue
        text = open(os.path.join(root, f)).read()
        for sm in STRUCT.finditer(text):
            name, body = sm.group(1), sm.group(2) + "\n"
            fields = []
            for fm in FIELD.finditer(body):
                attrs, rname, rtype = fm.group(1), fm.group(3), fm.group(4)
                tag = int(re.search(r'tag = "(\d+)"', attrs).group(1))
                mk = re.match(r'btree_map = "([^"]*)"', attrs)
                kind = ("btree_map=" + mk.group(1)) if mk else attrs.split(",")[0].strip()
                repeated = "repeated" in attrs
                target = None
                if kind == "message" or kind.startswith("btree_map") and "message" in kind:
                    path = re.sub(r',?>*$', '', re.sub(r'\s+', '', rtype))
                    m = re.search(r'((?:super::)*)((?:[a-z_0-9]+::)*)([A-Z]\w*)\s*>*$', path)
                    supers = m.group(1).count("super::")
                    rest = [p for p in m.group(2).split("::") if p]
                    base = mod.split("/")
                    base = base[:len(base) - supers] if supers else base
                    target = def_name("/".join(base + rest)) + "." + m.group(3)
                fields.append((tag, rname, kind, repeated, target))
            messages[prefix + "." + name] = fields
            for (_, rname, _, _, target) in fields:
                if target:
                    inline_targets[(prefix + "." + name, rname)] = target

names = sorted(messages)
index = {n: i for i, n in enumerate(names)}

def is_inline(msg, rname, kind):
    """Go embeds some structs with `json:",inline"` (Volume's VolumeSource, Probe's ProbeHandler,
    IngressRule's IngressRuleValue...): their fields appear in the parent's JSON, so the parent's
    OpenAPI definition has no property of that name. Such fields get the JSON name ""."""
    return kind == "message" and unknown(msg, rname) and inline_target(msg, rname)

def unknown(msg, rname):
    """A field the parent's OpenAPI definition does not list (inline, or newer than skiff)."""
    props = defs.get(msg, {}).get("properties", {})
    key = rname.replace("_", "").lower()
    return bool(props) and not any(p.replace("_", "").lower() == key for p in props)

def inline_target(msg, rname):
    """Whether the embedded message's fields are properties of the parent (most of them: the
    .proto files may be newer than skiff's schemas)."""
    target = inline_targets.get((msg, rname))
    fields = messages.get(target, [])
    props = defs.get(msg, {}).get("properties", {})
    known = sum(1 for (_, r, k, _, _) in fields if json_name(target, r) in props or is_inline(target, r, k))
    return bool(fields) and known * 2 > len(fields)

def json_name(msg, rname):
    props = defs.get(msg, {}).get("properties", {})
    key = rname.replace("_", "").lower()
    for p in props:
        if p.replace("_", "").lower() == key:
            return p
    parts = rname.split("_")
    return parts[0] + "".join(x[:1].upper() + x[1:] for x in parts[1:])

# Go marshals every non-pointer field, so a zero scalar on the wire usually means "unset" and
# Go's JSON encoding (omitempty) and defaulting treat it so. Zeros are kept for required fields
# and for these pointer fields, where a zero is a real value that differs from the default.
POINTER_FIELDS = {
    "replicas", "terminationGracePeriodSeconds", "activeDeadlineSeconds", "revisionHistoryLimit",
    "progressDeadlineSeconds", "backoffLimit", "backoffLimitPerIndex", "maxFailedIndexes", "completions",
    "parallelism", "ttlSecondsAfterFinished", "startingDeadlineSeconds", "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit", "suspend", "automountServiceAccountToken", "storageClassName", "optional",
    "privileged", "allowPrivilegeEscalation", "runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup",
    "readOnlyRootFilesystem", "minReplicas", "partition", "maxUnavailable", "maxSurge", "minAvailable",
    "immutable", "hostUsers", "shareProcessNamespace", "enableServiceLinks", "setHostnameAsFQDN",
    "allocateLoadBalancerNodePorts", "defaultMode", "mode", "priority", "expirationSeconds", "ready",
    "serving", "terminating", "port", "leaseDurationSeconds", "leaseTransitions", "stabilizationWindowSeconds",
    "gracePeriodSeconds", "deletionGracePeriodSeconds", "averageUtilization",
}

def keep_zero(msg, json_field):
    return json_field in defs.get(msg, {}).get("required", []) or json_field in POINTER_FIELDS

def ty(kind, target):
    if kind == "string": return "T::Str"
    if kind == "int32": return "T::I32"
    if kind == "int64": return "T::I64"
    if kind == "bool": return "T::Bool"
    if kind == "double": return "T::F64"
    if kind.startswith("bytes"): return "T::Bytes"
    if kind == "message": return f"T::Msg({index[target]})" if target in index else "T::Skip"
    if kind.startswith("btree_map"):
        v = kind.split("=", 1)[1].split(",")[1].strip()
        if v == "string": return "T::MapStr"
        if v == "bytes": return "T::MapBytes"
        return f"T::MapMsg({index[target]})" if target in index else "T::Skip"
    return "T::Skip"

out = ["// @generated by proto/gen_protobuf_table.py; do not edit by hand.",
       "//! Protobuf field tables of the Kubernetes API types (see `protobuf.rs`).",
       "",
       "use super::protobuf::{F, Msg, T};",
       "",
       "/// Every message, sorted by name; `T::Msg(i)` refers to `MESSAGES[i]`.",
       "pub static MESSAGES: &[Msg] = &["]
for n in names:
    fs = ", ".join(
        f'F {{ tag: {t}, json: "{"" if is_inline(n, r, k) else json_name(n, r)}", ty: {"T::Skip" if unknown(n, r) and not is_inline(n, r, k) else ty(k, tg)}, repeated: {"true" if rep else "false"}, keep_zero: {"true" if keep_zero(n, json_name(n, r)) else "false"} }}'
        for (t, r, k, rep, tg) in messages[n])
    out.append(f'    Msg {{ name: "{n}", fields: &[{fs}] }},')
out.append("];")
print("\n".join(out))
