// Starts Swagger UI on /docs. A file, not an inline script, so that the page's
// Content-Security-Policy can forbid inline scripts.
/* global SwaggerUIBundle */
window.ui = SwaggerUIBundle({
  url: document.body.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  // The public validator badge would be an image from another site.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
});
