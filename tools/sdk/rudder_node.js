// RudderStack's Node library in its default configuration (gzip, its form
// content type), pointed at Odoo: node rudder_node.js <odoo base url> <write key> <run id>
const Analytics = require('@rudderstack/rudder-sdk-node')

const [baseUrl, writeKey, run] = process.argv.slice(2)
const failures = []
const client = new Analytics(writeKey, {
  dataPlaneUrl: `${baseUrl}/automation/segment`,
  errorHandler: (error) => failures.push(String(error)),
  logLevel: 'error',
})

client.identify({ userId: `${run}-user`, anonymousId: `${run}-anon`, traits: { email: `${run}@example.com` } })
client.track({ anonymousId: `${run}-anon`, event: 'Product Viewed', properties: { sku: 'SHOE-1' } })
client.page({ userId: `${run}-user`, name: 'Checkout', properties: { url: '/checkout' } })
client.group({ userId: `${run}-user`, groupId: `${run}-company`, traits: { name: `${run} Inc.` } })
client.alias({ userId: `${run}-user`, previousId: `${run}-earlier` })
client.flush((error) => {
  if (error) failures.push(String(error))
  console.log(JSON.stringify({ failures }))
  process.exit(failures.length ? 1 : 0)
})
