"""A small customer CRM served over MCP: the upstream the gateway is demonstrated in front of.

Twenty fictional customers live in memory; writes change only this process's copy (each `build_server()`
gets its own). The tools span what a policy tells apart:

    search_customers        read-only
    get_customer            read-only
    update_customer_email   write, idempotent, not destructive
    delete_customer         write, destructive
    export_report           read-only, long-running: reports progress, stops when cancelled

plus the resource `customers://schema` (the JSON Schema of a customer record) and the prompt
`summarize_customer`. Each tool's input schema is generated from the strict pydantic model that parses
its arguments (`additionalProperties: false`, patterns, enums, bounds), so what a client or the gateway
is shown and what the server enforces are one definition. Invalid arguments come back as a tool error
(`isError: true`), as the 2025-11-25 specification asks so that a model can correct itself; an unknown
tool, prompt or resource is a JSON-RPC -32602 error.

Run: `python -m mcp_bastion.demo.customers --stdio`, or `--http [--host H] [--port N]` (see `serve`).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mcp_bastion.demo.serve import main

Region = Literal["eu", "us", "apac"]
Plan = Literal["free", "team", "enterprise"]
CustomerId = Annotated[str, Field(pattern=r"^C\d{3}$", description="Customer id: C and three digits, e.g. C001.")]
Email = Annotated[
    str,
    Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", json_schema_extra={"format": "email"}),
]


class _Strict(BaseModel):
    # Strict: "5" is not an integer; extra="forbid": an unknown argument is refused, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Customer(_Strict):
    """One customer record, as every tool returns it."""

    id: CustomerId
    name: str = Field(description="Full name.")
    email: Email = Field(description="Contact email address.")
    region: Region = Field(description="Data region holding the customer's records.")
    plan: Plan = Field(description="Subscription plan.")
    balance: float = Field(description="Account balance in EUR; negative when the customer owes money.")


class SearchArgs(_Strict):
    query: str = Field(max_length=100, description="Case-insensitive text found in name or email; '' matches all.")
    region: Region | None = Field(default=None, description="Only customers in this region.")
    limit: int = Field(default=10, ge=1, le=50, description="Maximum number of customers returned.")


class CustomerRef(_Strict):
    customer_id: CustomerId


class EmailUpdate(_Strict):
    customer_id: CustomerId
    email: Email = Field(description="The new contact email address.")


class ExportArgs(_Strict):
    region: Region = Field(description="Region to report on.")


_ROWS: Final[tuple[tuple[str, Region, Plan, float], ...]] = (
    ("Alba Moreno", "eu", "enterprise", 12500.00),
    ("Bram Visser", "eu", "team", 340.50),
    ("Chiara Conti", "eu", "free", 0.00),
    ("Dara Quinn", "us", "enterprise", 8900.00),
    ("Elliot Park", "us", "team", -120.75),
    ("Farah Haddad", "apac", "team", 1575.20),
    ("Goran Petrov", "eu", "free", 0.00),
    ("Hana Sato", "apac", "enterprise", 22010.00),
    ("Ines Duarte", "eu", "team", 615.00),
    ("Jonah Reed", "us", "free", 0.00),
    ("Kiri Ngata", "apac", "free", 0.00),
    ("Lena Brandt", "eu", "enterprise", 4800.00),
    ("Mateo Rojas", "us", "team", 275.40),
    ("Nia Okafor", "us", "enterprise", -1340.00),
    ("Omar Saleh", "apac", "team", 980.10),
    ("Priya Nair", "apac", "enterprise", 15120.00),
    ("Quentin Roux", "eu", "team", 60.00),
    ("Rosa Lind", "eu", "free", 0.00),
    ("Sam Whitfield", "us", "team", 1999.99),
    ("Tao Lin", "apac", "free", 0.00),
)


def seed() -> list[Customer]:
    """The demo dataset: C001 … C020, with addresses under the reserved `example.com` domain."""
    return [
        Customer(
            id=f"C{number:03d}",
            name=name,
            email=f"{name.lower().replace(' ', '.')}@example.com",
            region=region,
            plan=plan,
            balance=balance,
        )
        for number, (name, region, plan, balance) in enumerate(_ROWS, start=1)
    ]


SCHEMA_URI: Final = "customers://schema"
CUSTOMER_SCHEMA: Final = Customer.model_json_schema()
SEARCH_SCHEMA: Final = {
    "type": "object",
    "properties": {"customers": {"type": "array", "items": CUSTOMER_SCHEMA}},
    "required": ["customers"],
    "additionalProperties": False,
}
SCHEMA_RESOURCE: Final = types.Resource(
    uri=SCHEMA_URI,
    name="customer_schema",
    title="Customer record schema",
    description="JSON Schema of a customer record: the fields the customer tools return.",
    mime_type="application/json",
)
SUMMARY_PROMPT: Final = types.Prompt(
    name="summarize_customer",
    title="Summarize a customer",
    description="Ask for a short account summary of one customer, with their record attached.",
    arguments=[types.PromptArgument(name="customer_id", description="Customer id, e.g. C001.", required=True)],
)
EXPORT_STEPS: Final = ("selecting customers", "totalling balances", "formatting rows", "finishing report")

Ctx = ServerRequestContext[Any, Any]
ArgsT = TypeVar("ArgsT", bound=BaseModel)
Run = Callable[[Ctx, ArgsT], Awaitable[types.CallToolResult]]

READ_ONLY: Final = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)
EDIT: Final = types.ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
# Deleting twice leaves the same state as deleting once (the second call reports "no customer").
DESTROY: Final = types.ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)


@dataclass(frozen=True, slots=True)
class _Tool(Generic[ArgsT]):
    definition: types.Tool
    args: type[ArgsT]
    run: Run[ArgsT]


def _text(text: str, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=is_error)


def _data(payload: dict[str, Any]) -> types.CallToolResult:
    text = types.TextContent(text=json.dumps(payload))
    return types.CallToolResult(content=[text], structured_content=payload)


def _describe(exc: ValidationError) -> str:
    # Field paths and messages only: the rejected values are the caller's data.
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())


def build_server(customers: Iterable[Customer] | None = None, *, step_seconds: float = 0.01) -> Server[Any]:
    """A fresh server over its own copy of `customers` (default: `seed()`); `step_seconds` paces exports."""
    store = {c.id: c for c in (seed() if customers is None else customers)}
    tools: dict[str, _Tool[Any]] = {}

    def tool(
        name: str,
        title: str,
        args: type[ArgsT],
        annotations: types.ToolAnnotations,
        output_schema: dict[str, Any] | None = None,
    ) -> Callable[[Run[ArgsT]], Run[ArgsT]]:
        """Register the decorated function as tool `name`; its docstring is the tool's description."""

        def register(run: Run[ArgsT]) -> Run[ArgsT]:
            definition = types.Tool(
                name=name,
                title=title,
                description=inspect.getdoc(run),
                input_schema=args.model_json_schema(),
                output_schema=output_schema,
                annotations=annotations,
            )
            tools[name] = _Tool(definition, args, run)
            return run

        return register

    @tool("search_customers", "Search customers", SearchArgs, READ_ONLY, SEARCH_SCHEMA)
    async def search(ctx: Ctx, args: SearchArgs) -> types.CallToolResult:
        """Find customers whose name or email contains `query`, optionally only those in `region`.

        Returns at most `limit` customer records.
        """
        needle = args.query.casefold()
        hits = [
            c.model_dump()
            for c in store.values()
            if args.region in (None, c.region) and needle in f"{c.name}\n{c.email}".casefold()
        ]
        return _data({"customers": hits[: args.limit]})

    @tool("get_customer", "Get a customer", CustomerRef, READ_ONLY, CUSTOMER_SCHEMA)
    async def get(ctx: Ctx, args: CustomerRef) -> types.CallToolResult:
        """Return one customer's record by id."""
        if (customer := store.get(args.customer_id)) is None:
            return _text(f"No customer {args.customer_id}.", is_error=True)
        return _data(customer.model_dump())

    @tool("update_customer_email", "Update a customer's email", EmailUpdate, EDIT, CUSTOMER_SCHEMA)
    async def update_email(ctx: Ctx, args: EmailUpdate) -> types.CallToolResult:
        """Replace a customer's contact email address and return the updated record."""
        if (customer := store.get(args.customer_id)) is None:
            return _text(f"No customer {args.customer_id}.", is_error=True)
        store[customer.id] = customer.model_copy(update={"email": args.email})
        return _data(store[customer.id].model_dump())

    @tool("delete_customer", "Delete a customer", CustomerRef, DESTROY)
    async def delete(ctx: Ctx, args: CustomerRef) -> types.CallToolResult:
        """Permanently delete a customer and all of their data. This cannot be undone."""
        if store.pop(args.customer_id, None) is None:
            return _text(f"No customer {args.customer_id}.", is_error=True)
        return _text(f"Deleted customer {args.customer_id}.")

    @tool("export_report", "Export a regional report", ExportArgs, READ_ONLY)
    async def export(ctx: Ctx, args: ExportArgs) -> types.CallToolResult:
        """Build a CSV report of every customer in `region` (plan, balance) and the region's total.

        Reports progress while it runs and stops when cancelled.
        """
        rows = [c for c in store.values() if c.region == args.region]
        total = len(EXPORT_STEPS)
        for done, step in enumerate(EXPORT_STEPS):
            # Progress counts finished steps and names the next; a no-op unless the caller sent a token.
            await ctx.session.report_progress(done, total, step)
            # A checkpoint: a client's notifications/cancelled cancels this handler here, mid-export.
            await anyio.sleep(step_seconds)
        await ctx.session.report_progress(total, total, "done")
        lines = ["id,name,plan,balance", *(f"{c.id},{c.name},{c.plan},{c.balance:.2f}" for c in rows)]
        lines.append(f"total,{len(rows)} customers,,{sum(c.balance for c in rows):.2f}")
        return _text("\n".join(lines))

    async def list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[t.definition for t in tools.values()])

    async def call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        if (tool := tools.get(params.name)) is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        try:
            args = tool.args.model_validate(params.arguments or {})
        except ValidationError as exc:
            return _text(f"Invalid arguments for {params.name}: {_describe(exc)}", is_error=True)
        return await tool.run(ctx, args)

    async def list_resources(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[SCHEMA_RESOURCE])

    async def read_resource(ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        if params.uri != SCHEMA_URI:
            raise MCPError(types.INVALID_PARAMS, f"Unknown resource: {params.uri}")
        text = json.dumps(CUSTOMER_SCHEMA, indent=2)
        contents = types.TextResourceContents(uri=SCHEMA_URI, mime_type="application/json", text=text)
        return types.ReadResourceResult(contents=[contents])

    async def list_prompts(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[SUMMARY_PROMPT])

    async def get_prompt(ctx: Ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        if params.name != SUMMARY_PROMPT.name:
            raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")
        customer_id = (params.arguments or {}).get("customer_id", "")
        if (customer := store.get(customer_id)) is None:
            raise MCPError(types.INVALID_PARAMS, f"No customer {customer_id!r}")
        text = (
            "Summarize this customer's account in three sentences for their account manager: plan, "
            f"region, balance, and anything that needs attention.\n\n{customer.model_dump_json()}"
        )
        message = types.PromptMessage(role="user", content=types.TextContent(text=text))
        return types.GetPromptResult(description=f"Summary of {customer.id}", messages=[message])

    return Server(
        "mcp-bastion-demo-customers",
        version="1.0.0",
        title="Customers (demo CRM)",
        instructions="A demo customer database. Customer ids look like C001; regions are eu, us and apac.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )


STEP_SECONDS_VARIABLE: Final = "MCP_BASTION_DEMO_STEP_SECONDS"
"""Seconds per export step when run as a program (tests slow exports down to cancel one mid-way)."""

if __name__ == "__main__":
    step = float(os.environ.get(STEP_SECONDS_VARIABLE, "0.01"))
    main(build_server(step_seconds=step), prog="python -m mcp_bastion.demo.customers")
