// The tenants the caller sees (GET /api/v1/tenants: all for a platform admin, else its own).
import { listAll, session } from "./api.js";
import { field, query, select } from "./dom.js";

let cached = null;

export async function tenants(signal) {
  if (!cached || cached.token !== session.token) {
    const items = await listAll("/api/v1/tenants?limit=500", { signal });
    cached = { token: session.token, names: items.map((t) => t.metadata.name) };
  }
  return cached.names;
}

/** The tenant a view shows: the route's, else the caller's own, else the first one. */
export async function currentTenant(params, signal) {
  const names = await tenants(signal);
  if (params.tenant) return { names, tenant: params.tenant };
  return { names, tenant: session.me.tenant || names[0] || "" };
}

/** A tenant <select> that rewrites the route's query (`#/section?tenant=...`). */
export function tenantPicker(section, names, tenant, params) {
  return field(
    "Tenant",
    select("tenant", names.includes(tenant) ? names : [tenant, ...names], tenant, (value) => {
      location.hash = `#/${section}${query({ ...params, tenant: value })}`;
    }),
  );
}

export const canEdit = () =>
  session.me.platformAdmin || session.me.role === "editor" || session.me.role === "admin";
