"""The variables a template needs from a send's ``data``, found from its Jinja syntax tree.

``jinja2.meta.find_undeclared_variables`` names every variable a template reads and
does not set.  Rendering (with ``StrictUndefined``) fails only on those read outside a
guard, so fewer are needed: a read is guarded under ``x is defined`` (in an ``if``, a
conditional expression or after ``and``), as ``x|default(...)``, or behind a name set
from such a test (``{% set has_x = x is defined and x %}``).  Names set at the top of
a template, or of one it extends, are there for every block; a block a child replaces
is not rendered.  Pure: templates are read through the function given.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from jinja2 import Environment, TemplateSyntaxError, meta, nodes

# Tests that look only at a value's type or identity: a missing variable passes them.
_HARMLESS_TESTS = frozenset(
    {"defined", "undefined", "none", "true", "false", "boolean", "string", "number"}
    | {"integer", "float", "mapping", "callable", "sameas", "escaped"}
)
_DEFAULT_FILTERS = frozenset({"default", "d"})
_MACRO_NAMES = frozenset({"caller", "varargs", "kwargs"})
_MAX_NESTING = 10  # templates extending or including each other, as deep as followed
_NO_GUARD: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
_PARSER = Environment()  # parsing needs no loader or options: the default delimiters


@dataclass
class Region:
    """What one part of a template (the top level or one block) reads and places."""

    names: set[str] = field(default_factory=set)  # read outside any guard
    blocks: list[str] = field(default_factory=list)  # blocks placed here, rendered with it
    # Templates rendered with this context (include, import with context), and the
    # names known to be defined where they are.
    references: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    calls_super: bool = False


@dataclass
class TemplateUses:
    """The reads of one template source, by region."""

    parent: str | None = None
    top: Region = field(default_factory=Region)
    blocks: dict[str, Region] = field(default_factory=dict)
    assigned: set[str] = field(default_factory=set)  # set at the top level: seen by blocks


def required_variables(
    name: str, source_of: Callable[[str], str | None], *, nesting: int = 0
) -> frozenset[str]:
    """The variables template ``name`` cannot render without; ``source_of`` reads a template.

    A template that cannot be read (or parsed) needs nothing here: rendering reports it.
    """
    chain: list[TemplateUses] = []  # the template, then what it extends, most derived first
    current: str | None = name
    while current is not None and len(chain) < _MAX_NESTING:
        source = source_of(current)
        uses = template_uses(source) if source is not None else None
        if uses is None:
            break
        chain.append(uses)
        current = uses.parent
    if not chain:
        return frozenset()
    regions = [uses.top for uses in chain]
    rendered: set[str] = set()
    pending = list(chain[-1].top.blocks)  # the root places the blocks; children fill them
    while pending:
        block = pending.pop()
        if block in rendered:
            continue
        rendered.add(block)
        for region in (uses.blocks[block] for uses in chain if block in uses.blocks):
            regions.append(region)
            pending.extend(region.blocks)
            if not region.calls_super:
                break
    needed = set().union(*(region.names for region in regions))
    if nesting < _MAX_NESTING:
        for region in regions:
            for reference, safe in region.references:
                needed |= required_variables(reference, source_of, nesting=nesting + 1) - safe
    return frozenset(needed - set().union(*(uses.assigned for uses in chain)))


@functools.lru_cache(maxsize=512)
def template_uses(source: str) -> TemplateUses | None:
    """The reads of a template source (cached per source text); None if it does not parse."""
    try:
        tree = _PARSER.parse(source)
    except TemplateSyntaxError:
        return None
    uses = _Walker().walk(tree)
    # Jinja's own analysis has the last word on what a template does not declare itself
    # (its globals, for one), for every region of it.
    undeclared = meta.find_undeclared_variables(tree)
    for region in (uses.top, *uses.blocks.values()):
        region.names &= undeclared
    return uses


class _Walker:
    """Walks a syntax tree, noting each unguarded read in the region it belongs to."""

    def __init__(self) -> None:
        self.uses = TemplateUses()
        # Names set at the top level from a test: {% set has_x = x is defined and x %}.
        self.aliases: dict[str, tuple[frozenset[str], frozenset[str]]] = {}

    def walk(self, tree: nodes.Template) -> TemplateUses:
        self.body(tree.body, self.uses.top, frozenset(), frozenset(), top=True)
        return self.uses

    def body(
        self,
        statements: Iterable[nodes.Node],
        region: Region,
        safe: frozenset[str],
        bound: frozenset[str],
        *,
        top: bool = False,
    ) -> None:
        """Statements in order: what one sets is bound for the ones after it."""
        extended = False
        for statement in statements:
            if top and extended and isinstance(statement, nodes.Output):
                continue  # after {% extends %} the child's own output is never rendered
            self.statement(statement, region, safe, bound, top=top)
            names = _bound_by(statement)
            bound |= names
            if top:
                self.uses.assigned |= names
                extended = extended or isinstance(statement, nodes.Extends)

    def statement(
        self,
        node: nodes.Node,
        region: Region,
        safe: frozenset[str],
        bound: frozenset[str],
        *,
        top: bool,
    ) -> None:
        if isinstance(node, nodes.Extends):
            if top and isinstance(node.template, nodes.Const):
                self.uses.parent = str(node.template.value)
            else:
                self.expr(node.template, region, safe, bound)
        elif isinstance(node, nodes.Block):
            block = self.uses.blocks.setdefault(node.name, Region())
            region.blocks.append(node.name)
            self.body(node.body, block, safe, _in_block(node, bound))
        elif isinstance(node, nodes.If):
            self.branches(node, region, safe, bound)
        elif isinstance(node, nodes.For):
            self.expr(node.iter, region, safe, bound)
            inside = bound | _targets(node.target) | {"loop"}
            if node.test is not None:
                self.expr(node.test, region, safe, inside)
            self.body(node.body, region, safe, inside)
            self.body(node.else_, region, safe, bound)
        elif isinstance(node, nodes.Macro | nodes.CallBlock):
            if isinstance(node, nodes.CallBlock):
                self.expr(node.call, region, safe, bound)
            for default in node.defaults:
                self.expr(default, region, safe, bound)
            arguments = {arg.name for arg in node.args}
            self.body(node.body, region, safe, bound | arguments | _MACRO_NAMES)
        elif isinstance(node, nodes.With):
            for value in node.values:
                self.expr(value, region, safe, bound)
            inside = bound.union(*(_targets(target) for target in node.targets))
            self.body(node.body, region, safe, inside)
        elif isinstance(node, nodes.Assign):
            self.expr(node.node, region, safe, bound)
            if top and isinstance(node.target, nodes.Name):
                self.aliases[node.target.name] = self.guards(node.node)
        elif isinstance(node, nodes.Include | nodes.Import | nodes.FromImport):
            self.reference(node, region, safe, bound)
        elif isinstance(node, nodes.Stmt):  # output, filter blocks, scopes, {% do %}
            for _, value in node.iter_fields():
                children = value if isinstance(value, list) else [value]
                self.body([c for c in children if isinstance(c, nodes.Stmt)], region, safe, bound)
                for child in children:
                    if isinstance(child, nodes.Expr):
                        self.expr(child, region, safe, bound)
        else:
            self.expr(node, region, safe, bound)

    def branches(
        self, node: nodes.If, region: Region, safe: frozenset[str], bound: frozenset[str]
    ) -> None:
        """An if/elif/else chain: each branch knows what the tests before it said."""
        ruled_out: frozenset[str] = frozenset()  # defined, as earlier tests said otherwise
        for branch in (node, *node.elif_):
            self.expr(branch.test, region, safe | ruled_out, bound)
            defined, undefined = self.guards(branch.test)
            self.body(branch.body, region, safe | ruled_out | defined, bound)
            ruled_out |= undefined
        self.body(node.else_, region, safe | ruled_out, bound)

    def reference(
        self,
        node: nodes.Include | nodes.Import | nodes.FromImport,
        region: Region,
        safe: frozenset[str],
        bound: frozenset[str],
    ) -> None:
        if not isinstance(node.template, nodes.Const):
            self.expr(node.template, region, safe, bound)
        elif node.with_context:  # an import without context cannot read the data
            region.references.append((str(node.template.value), safe))

    def expr(
        self, node: nodes.Node | None, region: Region, safe: frozenset[str], bound: frozenset[str]
    ) -> None:
        if node is None:
            return
        if isinstance(node, nodes.Name):
            if node.ctx == "load" and node.name not in safe and node.name not in bound:
                region.names.add(node.name)
            return
        if isinstance(node, nodes.Test | nodes.Filter) and _tolerates_undefined(node):
            children: Iterable[nodes.Node] = (
                child for child in node.iter_child_nodes() if child is not node.node
            )
        elif isinstance(node, nodes.CondExpr):
            self.expr(node.test, region, safe, bound)
            defined, undefined = self.guards(node.test)
            self.expr(node.expr1, region, safe | defined, bound)
            self.expr(node.expr2, region, safe | undefined, bound)
            return
        elif isinstance(node, nodes.And | nodes.Or):
            self.expr(node.left, region, safe, bound)
            defined, undefined = self.guards(node.left)
            # The right side runs only if the left was true (and) or false (or).
            known = defined if isinstance(node, nodes.And) else undefined
            self.expr(node.right, region, safe | known, bound)
            return
        else:
            if isinstance(node, nodes.Call) and _is_name(node.node, "super"):
                region.calls_super = True
            children = node.iter_child_nodes()
        for child in children:
            self.expr(child, region, safe, bound)

    def guards(self, test: nodes.Node) -> tuple[frozenset[str], frozenset[str]]:
        """The names a test proves defined when true, and those it proves defined when false."""
        if isinstance(test, nodes.Test) and isinstance(test.node, nodes.Name):
            name = frozenset({test.node.name})
            if test.name == "defined":
                return name, frozenset()
            if test.name == "undefined":
                return frozenset(), name
            return _NO_GUARD
        if isinstance(test, nodes.Not):
            defined, undefined = self.guards(test.node)
            return undefined, defined
        if isinstance(test, nodes.And | nodes.Or):
            left, right = self.guards(test.left), self.guards(test.right)
            if isinstance(test, nodes.And):  # true: both were; false: either was not
                return left[0] | right[0], left[1] & right[1]
            return left[0] & right[0], left[1] | right[1]
        if isinstance(test, nodes.Name) and test.ctx == "load":
            return self.aliases.get(test.name, _NO_GUARD)
        return _NO_GUARD


def _tolerates_undefined(node: nodes.Test | nodes.Filter) -> bool:
    """``x is defined``, ``x|default(...)``: a read of ``x`` that a missing ``x`` passes."""
    if not isinstance(node.node, nodes.Name):
        return False
    if isinstance(node, nodes.Test):
        return node.name in _HARMLESS_TESTS
    return node.name in _DEFAULT_FILTERS


def _is_name(node: nodes.Node, name: str) -> bool:
    return isinstance(node, nodes.Name) and node.name == name


def _in_block(node: nodes.Block, bound: frozenset[str]) -> frozenset[str]:
    """What a block's body has bound: ``super`` and ``self``, and a scoped block's locals."""
    return (bound if node.scoped else frozenset()) | {"super", "self"}


def _targets(target: nodes.Node) -> frozenset[str]:
    """The names an assignment or loop target binds."""
    if isinstance(target, nodes.Name):
        return frozenset({target.name})
    if isinstance(target, nodes.Tuple):
        return frozenset().union(*(_targets(item) for item in target.items))
    return frozenset()  # a namespace attribute: ns.x


def _bound_by(statement: nodes.Node) -> frozenset[str]:
    """The names a statement sets for the statements after it."""
    if isinstance(statement, nodes.Assign | nodes.AssignBlock):
        return _targets(statement.target)
    if isinstance(statement, nodes.Macro):
        return frozenset({statement.name})
    if isinstance(statement, nodes.Import):
        return frozenset({statement.target})
    if isinstance(statement, nodes.FromImport):
        return frozenset(name if isinstance(name, str) else name[1] for name in statement.names)
    return frozenset()
