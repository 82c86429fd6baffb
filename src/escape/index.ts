/**
 * Escaping at the point of rendering: one function per output syntax that a registry string can
 * reach (an nft script, an iptables-restore payload, a terminal table). Validation at the door
 * already refuses hostile names; these functions hold even when validation has a bug, so that a
 * name can never become syntax. Each returns text made only of characters that mean nothing to
 * its syntax, cut to the syntax's length limit with a hash suffix that keeps cut texts distinct.
 */
import { createHash } from 'node:crypto';

/** nft's limit on a comment (NFTNL_UDATA_COMMENT_MAXLEN), in bytes. */
export const NFT_COMMENT_MAX = 128;
/** iptables' comment match limit (XT_MAX_COMMENT_LEN, less its NUL), in bytes. */
export const IPTABLES_COMMENT_MAX = 255;

// Letters, digits and the punctuation weft's own comments use; never a quote, backslash, newline,
// semicolon, brace or `$`/`@` (nft variables and sets), nor anything outside ASCII.
const SAFE = /[^A-Za-z0-9 ._:/\-+=,()<>[\]]/g;

function tag(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

// A text that needed a replacement or a cut gets a hash of the original, so that two names
// differing only in unsafe characters, or past the limit, stay distinct.
function safeText(text: string, max: number): string {
  const replaced = text.replace(SAFE, '_');
  if (replaced === text && text.length <= max) return text;
  return `${replaced.slice(0, max - 9)}~${tag(text)}`;
}

/** `text` as an nft double-quoted string, quotes included, at most {@link NFT_COMMENT_MAX} bytes inside. */
export function nftString(text: string, max = NFT_COMMENT_MAX): string {
  return `"${safeText(text, max)}"`;
}

/** `text` as one iptables-restore token: double-quoted when it holds spaces, at most 255 bytes. */
export function iptablesComment(text: string): string {
  const safe = safeText(text, IPTABLES_COMMENT_MAX);
  return safe.includes(' ') ? `"${safe}"` : safe;
}

/** nft's limit on a chain, set or map name (NFT_NAME_MAXLEN, less its NUL), in bytes. */
export const NFT_NAME_MAX = 255;

// nft's identifier characters after the first (scanner.l): letters, digits, `/`, `-`, `_`, `.`.
const IDENT_UNSAFE = /[^A-Za-z0-9/_.-]/g;

/**
 * `text` as a part of an nft chain, set or map name: only identifier characters, cut to `max`
 * bytes with a hash suffix when anything was replaced or cut. Callers put a fixed prefix starting
 * with a letter in front and a hash of the whole identity in it, so the name stays unique.
 */
export function nftIdentifierPart(text: string, max = NFT_NAME_MAX): string {
  const replaced = text.replace(IDENT_UNSAFE, '_');
  if (replaced === text && text.length <= max) return text;
  return `${replaced.slice(0, Math.max(0, max - 9))}_${tag(text)}`;
}

// C0 and C1 controls, DEL, and the bidirectional overrides and isolates that reorder a line.
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069\\]/g;

/**
 * `text` for a terminal: control characters, bidi overrides and the backslash shown as escapes
 * (`\n`, `\x1b`, `\u202e`, `\\`), so a name can neither move the cursor nor fake a table row.
 */
export function terminalText(text: string): string {
  return text.replace(UNPRINTABLE, (c) => {
    if (c === '\\') return '\\\\';
    if (c === '\n') return '\\n';
    if (c === '\t') return '\\t';
    if (c === '\r') return '\\r';
    const code = c.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, '0')}`
      : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}
