// Segment's Node library in its default configuration, pointed at Odoo:
// node segment_node.js <odoo base url> <write key> <run id>
const { Analytics } = require('@segment/analytics-node')

const [baseUrl, writeKey, run] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host: baseUrl, path: '/automation/segment/v1/batch' })
const failures = []
analytics.on('error', (error) => failures.push(String(error.reason || error)))

analytics.identify({ userId: `${run}-user`, anonymousId: `${run}-anon`, traits: { email: `${run}@example.com` } })
analytics.track({ anonymousId: `${run}-anon`, event: 'Product Viewed', properties: { sku: 'SHOE-1' } })
analytics.page({ userId: `${run}-user`, name: 'Checkout', properties: { url: '/checkout' } })
analytics.group({ userId: `${run}-user`, groupId: `${run}-company`, traits: { name: `${run} Inc.` } })
analytics.alias({ userId: `${run}-user`, previousId: `${run}-earlier` })
analytics.closeAndFlush({ timeout: 20000 }).then(() => {
  console.log(JSON.stringify({ failures }))
  process.exit(failures.length ? 1 : 0)
})
