#!/usr/bin/env node
'use strict'

// `npm run check:links`: every relative link and image in the documentation (README.md,
// CONTRIBUTING.md, CHANGELOG.md, SECURITY.md and docs/*.md) must name a file or directory that
// exists, and every `#anchor` a heading of the Markdown file it points into (GitHub's slugs).
// No network: links with a scheme (https:, mailto:) are not followed.
//   node scripts/check-links.js [--root DIR] [FILE.md ...]
// FILEs are relative to the root (the repository's unless --root), by default the files above.
// Prints each broken link as `file:line: message` and exits 1 if there is one.

const fs = require('fs')
const path = require('path')

const root = path.join(__dirname, '..')

/** The documentation files checked by default, relative to `dir`. */
function documents (dir = root) {
  const top = ['README.md', 'CONTRIBUTING.md', 'CHANGELOG.md', 'SECURITY.md'].filter((f) => fs.existsSync(path.join(dir, f)))
  const docs = fs.existsSync(path.join(dir, 'docs'))
    ? fs.readdirSync(path.join(dir, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)
    : []
  return [...top, ...docs]
}

/** Whether `line` closes a code block opened by `fence` (the same character, at least as many). */
function closes (line, fence) {
  const m = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(line)
  return m !== null && m[1][0] === fence[0] && m[1].length >= fence.length
}

/** The lines of `text` outside fenced code blocks, each as [lineNumber, line] (inline code blanked). */
function proseLines (text) {
  const out = []
  let fence = null
  text.split('\n').forEach((line, i) => {
    const open = /^ {0,3}(`{3,}|~{3,})/.exec(line)
    if (fence) {
      if (closes(line, fence)) fence = null
      return
    }
    if (open) {
      fence = open[1]
      return
    }
    out.push([i + 1, line.replace(/(`+)(?:(?!\1)[\s\S])*?\1/g, (code) => ' '.repeat(code.length))])
  })
  return out
}

/** GitHub's anchor for a heading's text: lower case, punctuation dropped, spaces to hyphens. */
function slug (heading) {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // a link or image: its text
    .replace(/<[^>]+>/g, '') // inline HTML
    .replace(/`/g, '')
    .replace(/[*~]/g, '')
  return text.trim().toLowerCase().replace(/[^\p{L}\p{N}\p{M}\p{Pc} -]/gu, '').replace(/ /g, '-')
}

/** Every anchor a Markdown file defines: its headings' slugs (repeats numbered) and explicit ids. */
function anchors (text) {
  const seen = new Map()
  const found = new Set()
  let fence = null
  for (const line of text.split('\n')) {
    const open = /^ {0,3}(`{3,}|~{3,})/.exec(line)
    if (fence) {
      if (closes(line, fence)) fence = null
      continue
    }
    if (open) {
      fence = open[1]
      continue
    }
    const heading = /^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)
    if (heading) {
      const base = slug(heading[1])
      const n = seen.get(base) || 0
      seen.set(base, n + 1)
      found.add(n === 0 ? base : `${base}-${n}`)
    }
    for (const m of line.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) found.add(m[1])
  }
  return found
}

/** The link targets on one line of prose: inline links and images, reference definitions, href/src. */
function targets (line) {
  const out = []
  for (const m of line.matchAll(/!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)/g)) out.push(m[1])
  const def = /^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$/.exec(line)
  if (def) out.push(def[1])
  for (const m of line.matchAll(/\b(?:href|src)="([^"]*)"/g)) out.push(m[1])
  return out
}

/** Checks `files` (relative to `dir`); returns the problems, each `{file, line, target, message}`. */
function checkLinks (files = documents(), dir = root) {
  const problems = []
  const cache = new Map()
  const anchorsOf = (file) => {
    if (!cache.has(file)) cache.set(file, anchors(fs.readFileSync(file, 'utf8')))
    return cache.get(file)
  }
  for (const file of files) {
    const full = path.resolve(dir, file)
    for (const [lineNumber, line] of proseLines(fs.readFileSync(full, 'utf8'))) {
      for (const target of targets(line)) {
        const problem = (message) => problems.push({ file, line: lineNumber, target, message })
        if (target === '') {
          problem('empty link')
          continue
        }
        if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//')) continue // https:, mailto:, ...
        const hash = target.indexOf('#')
        const rawPath = hash === -1 ? target : target.slice(0, hash)
        const anchor = hash === -1 ? null : decodeURIComponent(target.slice(hash + 1))
        let linked = full
        if (rawPath !== '') {
          const decoded = decodeURIComponent(rawPath.split('?')[0])
          linked = decoded.startsWith('/') ? path.join(dir, decoded) : path.resolve(path.dirname(full), decoded)
          if (!path.relative(dir, linked) || path.relative(dir, linked).startsWith('..')) {
            problem(`${rawPath} points outside the repository`)
            continue
          }
          if (!fs.existsSync(linked)) {
            problem(`${rawPath} does not exist`)
            continue
          }
        }
        if (anchor !== null && linked.endsWith('.md') && fs.statSync(linked).isFile()) {
          if (!anchorsOf(linked).has(anchor)) problem(`#${anchor} is not a heading of ${path.relative(dir, linked)}`)
        }
      }
    }
  }
  return problems
}

if (require.main === module) {
  const args = process.argv.slice(2)
  let dir = root
  if (args[0] === '--root') {
    dir = path.resolve(args[1])
    args.splice(0, 2)
  }
  const files = args.length > 0 ? args : documents(dir)
  const problems = checkLinks(files, dir)
  for (const p of problems) console.error(`${p.file}:${p.line}: ${p.target}: ${p.message}`)
  if (problems.length > 0) {
    console.error(`check-links: ${problems.length} broken link(s) in ${files.length} files`)
    process.exit(1)
  }
  console.log(`check-links: every link in ${files.length} files resolves`)
}

module.exports = { checkLinks, documents, slug, anchors }
