/**
 * The name rules of the Kubernetes API server (k8s.io/apimachinery's util/validation), written
 * out for weft: every name a registry writer chooses (namespaces, object names, port names, label
 * keys and values, node names, zones, hostnames) must pass the rule the API server applies to that
 * field before it reaches a rule, a comment or a terminal. Each check returns the reason a value
 * fails, or undefined when it passes, so callers can name the field at fault.
 */

/** Longest DNS-1123 or DNS-1035 label. */
export const DNS_LABEL_MAX = 63;
/** Longest DNS-1123 subdomain. */
export const DNS_SUBDOMAIN_MAX = 253;
/** Longest IANA service name (a named port). */
export const IANA_SVC_NAME_MAX = 15;
/** Longest name part of a qualified name, and longest label value. */
export const QUALIFIED_NAME_MAX = 63;
/** Longest label value. */
export const LABEL_VALUE_MAX = 63;

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const QUALIFIED_NAME_PART = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function tooLong(value: string, max: number): string | undefined {
  return value.length > max ? `must be no more than ${max} characters (got ${value.length})` : undefined;
}

/** A DNS-1123 label (RFC 1123): namespaces, Service port names, EndpointSlice port names, hostnames. */
export function dns1123LabelProblem(value: string): string | undefined {
  if (value === '') return 'must not be empty';
  return (
    tooLong(value, DNS_LABEL_MAX) ??
    (DNS1123_LABEL.test(value)
      ? undefined
      : 'must be a DNS-1123 label: lowercase letters, digits and "-", starting and ending with a letter or digit')
  );
}

/** A DNS-1123 subdomain: EndpointSlice names, node names, label-key prefixes. */
export function dns1123SubdomainProblem(value: string): string | undefined {
  if (value === '') return 'must not be empty';
  return (
    tooLong(value, DNS_SUBDOMAIN_MAX) ??
    (DNS1123_SUBDOMAIN.test(value)
      ? undefined
      : 'must be a DNS-1123 subdomain: lowercase letters, digits, "-" and ".", starting and ending with a letter or digit')
  );
}

/** A DNS-1035 label (RFC 1035): Service names, which become DNS names. */
export function dns1035LabelProblem(value: string): string | undefined {
  if (value === '') return 'must not be empty';
  return (
    tooLong(value, DNS_LABEL_MAX) ??
    (DNS1035_LABEL.test(value)
      ? undefined
      : 'must be a DNS-1035 label: lowercase letters, digits and "-", starting with a letter and ending with a letter or digit')
  );
}

/** An IANA_SVC_NAME (RFC 6335): a named targetPort. */
export function ianaSvcNameProblem(value: string): string | undefined {
  if (value === '') return 'must not be empty';
  const long = tooLong(value, IANA_SVC_NAME_MAX);
  if (long) return long;
  if (!/^[-a-z0-9]+$/.test(value))
    return 'must contain only lowercase letters, digits and "-" (IANA_SVC_NAME)';
  if (!/[a-z]/.test(value)) return 'must contain at least one letter (IANA_SVC_NAME)';
  if (value.includes('--')) return 'must not contain consecutive hyphens (IANA_SVC_NAME)';
  if (value.startsWith('-') || value.endsWith('-'))
    return 'must not begin or end with a hyphen (IANA_SVC_NAME)';
  return undefined;
}

/**
 * A qualified name, `[prefix/]name`: label keys and (lowercased) annotation keys. The optional
 * prefix is a DNS-1123 subdomain; the name is at most 63 alphanumerics, `-`, `_` and `.`, starting
 * and ending with an alphanumeric.
 */
export function qualifiedNameProblem(value: string): string | undefined {
  const parts = value.split('/');
  if (parts.length > 2)
    return 'must be a qualified name: an optional DNS subdomain prefix and "/", then a name';
  let name = parts[0] ?? '';
  if (parts.length === 2) {
    const prefix = parts[0] ?? '';
    name = parts[1] ?? '';
    if (prefix === '') return 'must not have an empty prefix before "/"';
    const p = dns1123SubdomainProblem(prefix);
    if (p) return `prefix ${p}`;
  }
  if (name === '') return 'must not have an empty name part';
  const long = tooLong(name, QUALIFIED_NAME_MAX);
  if (long) return `name part ${long}`;
  return QUALIFIED_NAME_PART.test(name)
    ? undefined
    : 'name part must be letters, digits, "-", "_" and ".", starting and ending with a letter or digit';
}

/** A label value: empty, or at most 63 alphanumerics, `-`, `_` and `.` with alphanumeric ends. */
export function labelValueProblem(value: string): string | undefined {
  return (
    tooLong(value, LABEL_VALUE_MAX) ??
    (LABEL_VALUE.test(value)
      ? undefined
      : 'must be a label value: empty, or letters, digits, "-", "_" and ".", starting and ending with a letter or digit')
  );
}
